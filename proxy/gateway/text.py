"""Which characters the proxy refuses where it stores, echoes or forwards text."""

from __future__ import annotations

import re

# Lone surrogates are not Unicode scalar values: no UTF-8 encoder (httpx, SQLite, the JSON reply) takes them.
_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 and C1 control characters, DEL, and lone surrogates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The same, less tab, line feed and carriage return: what a written answer may hold.
_CONTROL_IN_PROSE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def has_control_characters(text: str) -> bool:
    """For names (tenants, keys): no control character at all."""
    return _CONTROL.search(text) is not None


def has_control_characters_in_prose(text: str) -> bool:
    """For written text (answers): control characters other than tab and line breaks."""
    return _CONTROL_IN_PROSE.search(text) is not None
