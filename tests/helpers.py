"""Small checks shared by several test modules."""

import sys
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


if sys.version_info >= (3, 10):
    from importlib.metadata import entry_points
else:  # 3.9's entry_points() takes no group/name; OTel's API depends on the backport
    from importlib_metadata import entry_points

__all__ = ["entry_points", "is_canonical_v7"]
