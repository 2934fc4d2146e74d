"""One rule for every text field a client sends: no C0 control characters except tab, newline and carriage
return, and no lone surrogates (they are not characters and neither database can store them). Violations are
rejected, never stripped, so what is stored is exactly what was sent."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def check_text(value: str) -> str:
    """`value` unchanged, or a validation error naming the first forbidden character and where it is."""
    found = _FORBIDDEN.search(value)
    if found is not None:
        raise PydanticCustomError(
            "control_character",
            "character {character} at position {position} is not allowed: text may hold no control characters "
            "other than tab, newline and carriage return",
            {"character": ascii(found.group()), "position": found.start()},
        )
    return value


Text = Annotated[str, AfterValidator(check_text)]
"""A `str` field that follows the text rule; add length limits with `Field(max_length=…)`."""
