"""Opik ids: UUID version 7 strings, written in canonical lower-case hyphenated form.

Opik's backend parses ids with Java's ``UUID.fromString``, which accepts only the
hyphenated 8-4-4-4-12 spelling, so every id this package writes goes through
:func:`canonical_uuid_v7` first.
"""

import os
import random
import re
import time
import uuid
import weakref
from itertools import count
from typing import Any, Iterator, Optional, Tuple

# The spelling every id written by this package has; checked first because it is
# by far the most common input and a regex match is much cheaper than ``uuid.UUID``.
_CANONICAL_V7 = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
).fullmatch

_VERSION_7 = 0x7 << 76
_RFC_4122_VARIANT = 0x2 << 62
# Bytes 6 to 9 of a UUIDv7: version 7, 12 random bits, the RFC variant, 14 random bits.
_MIDDLE_FIXED = 0x7000_8000
_MIDDLE_RANDOM = 0x0FFF_3FFF


def uuid_v7_int(timestamp_ms: int, random_bits: int) -> int:
    """Assemble a UUIDv7 integer from a millisecond timestamp and 74 random bits."""
    return (
        (timestamp_ms & 0xFFFF_FFFF_FFFF) << 80
        | _VERSION_7
        | ((random_bits >> 62) & 0xFFF) << 64
        | _RFC_4122_VARIANT
        | (random_bits & 0x3FFF_FFFF_FFFF_FFFF)
    )


def format_uuid(value: int) -> str:
    """Render a 128-bit integer in canonical lower-case hyphenated UUID form."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def generate_id(timestamp_ms: Optional[int] = None) -> str:
    """Return a fresh Opik id: a canonical lower-case UUIDv7 string.

    The random bits come from the operating system, never from the ``random``
    module, whose global state an application may seed.

    Args:
        timestamp_ms: Unix time in milliseconds to embed; defaults to now.
    """
    return _format_v7(timestamp_ms, int.from_bytes(os.urandom(10), "big") >> 6)


class IdGenerator:
    """Mints Opik ids on the span-start path, cheaper than :func:`generate_id`.

    Each millisecond gets a fresh random 26-bit middle (``rand_a`` and the top of
    ``rand_b``) and a 48-bit counter starting at a random value below 2**47, as RFC
    9562 (section 6.2) allows: an id is one counter step and one format instead of
    several random draws, and ids minted in one millisecond sort in minting order. Two
    generators collide only by drawing the same middle *and* overlapping counter
    ranges in the same millisecond, about as unlikely as 73 random bits.

    The randomness is a private ``random.Random`` seeded from the operating system:
    unaffected by ``random.seed()`` anywhere in the application, and reseeded (with a
    fresh millisecond state) in a forked child, so that parent and child never mint
    the same ids. Thread-safe: the per-millisecond state is one tuple, and counting
    is one C call.
    """

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))
        self._bits = self._random.getrandbits  # reseeding keeps the same Random object
        self._millisecond: Tuple[Optional[int], str, Iterator[int]] = (None, "", iter(()))
        if hasattr(os, "register_at_fork"):
            reference = weakref.ref(self)

            def reseed() -> None:
                generator = reference()
                if generator is not None:
                    generator._random.seed(os.urandom(32))
                    generator._millisecond = (None, "", iter(()))

            os.register_at_fork(after_in_child=reseed)

    def new_id(self, timestamp_ms: Optional[int] = None) -> str:
        """A fresh canonical UUIDv7 string embedding ``timestamp_ms`` (default: now)."""
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        state = self._millisecond
        if state[0] != timestamp_ms:
            # Interleaved timestamps (threads, explicit start times) each start afresh.
            middle = ((self._bits(32) & _MIDDLE_RANDOM) | _MIDDLE_FIXED).to_bytes(4, "big").hex("-", 2)
            state = self._millisecond = (timestamp_ms, f"{_v7_head(timestamp_ms)}{middle}-", count(self._bits(47)))
        return "%s%012x" % (state[1], next(state[2]))


def _v7_head(timestamp_ms: int) -> str:
    """The first 14 characters of a UUIDv7: both timestamp groups."""
    return "%08x-%04x-" % ((timestamp_ms >> 16) & 0xFFFF_FFFF, timestamp_ms & 0xFFFF)


def _format_v7(timestamp_ms: Optional[int], bits: int) -> str:
    if timestamp_ms is None:
        timestamp_ms = time.time_ns() // 1_000_000
    # One %-format call: this runs for every linked span, so it is kept flat.
    return "%08x-%04x-7%03x-%04x-%012x" % (
        (timestamp_ms >> 16) & 0xFFFF_FFFF,
        timestamp_ms & 0xFFFF,
        bits >> 62,
        (bits >> 48) & 0x3FFF | 0x8000,
        bits & 0xFFFF_FFFF_FFFF,
    )


def canonical_uuid_v7(value: Any) -> Optional[str]:
    """Return ``value`` as a canonical UUIDv7 string, or ``None`` if it is not one.

    Accepts whatever Python's ``uuid.UUID`` accepts (upper case, no hyphens, ``{...}``,
    ``urn:uuid:``) as long as the version is 7 and the variant is RFC 4122; anything
    that is not a ``str`` is rejected, and so is any whitespace, surrounding or inner.
    """
    if not isinstance(value, str):
        return None
    if _CANONICAL_V7(value):
        return value
    # Whitespace anywhere fails: ``uuid.UUID`` lets ``int()`` skip it, so a space
    # inside ``{ ...}`` or after ``urn:uuid:`` would pad a 31-digit id into a valid one.
    if value.split() != [value]:
        return None
    try:
        parsed = uuid.UUID(value)
    except (ValueError, TypeError):
        return None
    return str(parsed) if parsed.version == 7 else None


def is_valid_uuid_v7(value: Any) -> bool:
    """Tell whether ``value`` is a string Opik accepts as a UUIDv7 id."""
    return canonical_uuid_v7(value) is not None
