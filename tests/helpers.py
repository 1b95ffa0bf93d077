"""Small checks shared by several test modules."""

import uuid
from typing import Any


def is_canonical_v7(value: Any) -> bool:
    """Whether ``value`` is a UUIDv7 string in the canonical lower-case hyphenated form."""
    if not isinstance(value, str):
        return False
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return parsed.version == 7 and str(parsed) == value
