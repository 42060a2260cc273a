"""Telling listeners (stats, metrics) of an event: one failing listener never breaks the caller."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)


def tell(listeners: Iterable[Callable[..., Any]], *args: Any, what: str) -> None:
    for listener in listeners:
        try:
            listener(*args)
        except Exception as error:  # noqa: BLE001 - listeners must not break what they listen to
            log.warning("%s listener failed: %s", what, error)
