"""Admin subcommands (memory management, exports). Each registers itself on the parser."""

from __future__ import annotations

from typing import Any


def add_admin_commands(commands: Any) -> None:
    """Placeholder hook: memory and export commands are added here."""
    return None
