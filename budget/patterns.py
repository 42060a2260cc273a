"""A regular expression in config or a request: refused at validation when it does not compile."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"not a valid regular expression: {error}") from error
    return pattern


RegexPattern = Annotated[str, AfterValidator(_compiles)]
