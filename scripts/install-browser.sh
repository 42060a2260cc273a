#!/usr/bin/env bash
# Headless Chromium and its WebDriver from Debian's packages, for tests/test_dashboard.py.
# Idempotent: returns at once when both are installed. Never downloads a browser build of its own.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-browser: installing Debian's chromium and chromium-driver" >&2
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
chromium --version >&2
chromedriver --version >&2
