"""What the OTLP encoder can carry, and the nearest value it can for what it cannot.

The standard encoder logs a full traceback for every attribute it fails on (a lone
surrogate, an int beyond 64 bits, an unsupported type, a key that is not a string) and
drops it, and a bad span name, status description or scope name fails the whole
batch. Values are therefore repaired before encoding, never dropped: surrogates become
U+FFFD, huge ints and unknown objects become text, structure is kept.

Everything here is pure and depends on nothing but the standard library, so any encoder
(the SDK's or a direct wire encoder) can use the same predicates.
"""

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Dict, Optional

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# Deeper nesting becomes text: protobuf refuses deep messages, and a self-containing
# list must not recurse forever.
MAX_DEPTH = 32


def is_sendable_text(value: Any) -> bool:
    """Whether ``value`` is a ``str`` that encodes as UTF-8 (no lone surrogates)."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_sendable_value(value: Any, _depth: int = 0) -> bool:
    """Whether the OTLP encoder takes ``value`` as an attribute value as it is."""
    kind = type(value)
    if kind is str:
        return value.isascii() or is_sendable_text(value)
    if kind is bool or kind is float or value is None:
        return True
    if kind is int:
        return bool(INT64_MIN <= value <= INT64_MAX)
    if kind is bytes:
        return True
    if kind is tuple or kind is list:
        return _depth < MAX_DEPTH and all(is_sendable_value(item, _depth + 1) for item in value)
    if kind is dict:
        return _depth < MAX_DEPTH and all(
            bool(key) and is_sendable_text(key) and is_sendable_value(item, _depth + 1) for key, item in value.items()
        )
    # Subclasses (enums, numpy scalars, custom containers) and anything else: the
    # encoder may take some, but their str/len/iteration are user code, so they are
    # rebuilt from plain types.
    return False


def repaired_text(value: Any) -> str:
    """``value`` as UTF-8-encodable text: lone surrogates replaced; a non-string is
    written with ``str()`` (or named by its type when that fails)."""
    text: str
    if type(value) is str:
        text = value
    else:
        try:
            written = str(value)
        except Exception:
            return f"<unprintable {type(value).__name__}>"
        if not isinstance(written, str):
            return f"<unprintable {type(value).__name__}>"
        text = str.__str__(written)
    if is_sendable_text(text):
        return text
    # Through UTF-16, a lone surrogate becomes U+FFFD while a valid pair is joined.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def repaired_attribute_value(value: Any, _depth: int = 0) -> Any:
    """``value`` if sendable, else the nearest value the encoder takes: text repaired,
    out-of-range ints and unknown objects as text, sequences as tuples and mappings as
    dicts with their items repaired, nesting beyond :data:`MAX_DEPTH` as text."""
    if is_sendable_value(value, _depth):
        return value
    try:
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, str):
            return repaired_text(value)
        if isinstance(value, int):
            number = int(value)
            return number if INT64_MIN <= number <= INT64_MAX else str(number)
        if isinstance(value, float):
            return float(value)
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if _depth < MAX_DEPTH:
            if isinstance(value, Mapping):
                # As the SDK cleans mappings: an empty key names nothing and is left out.
                return {repaired_text(key): repaired_attribute_value(item, _depth + 1) for key, item in value.items() if key}
            if isinstance(value, (Sequence, set, frozenset)):
                return tuple(repaired_attribute_value(item, _depth + 1) for item in value)
    except Exception:
        pass
    return repaired_text(value)


def repaired_attributes(attributes: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """A repaired copy of ``attributes``, or ``None`` when every key and value is
    sendable already. A repaired key never replaces a key that was there as is."""
    if not attributes:
        return None
    try:
        items = list(attributes.items())
    except Exception:
        return {}
    if all(key and is_sendable_text(key) and is_sendable_value(value) for key, value in items):
        return None
    result: Dict[str, Any] = {}
    for key, value in items:
        if is_sendable_text(key):
            result[key] = repaired_attribute_value(value)
    for key, value in items:
        if not is_sendable_text(key):
            result.setdefault(repaired_text(key), repaired_attribute_value(value))
    # The SDK refuses an empty key (it names nothing); a repaired set leaves it out too.
    result.pop("", None)
    return result


def strict_json_text(text: str) -> Optional[str]:
    """``text`` rewritten as strict JSON when it is JSON only to Python's lenient parser
    (it holds ``NaN``/``Infinity``, which Opik's Java parser rejects): those numbers
    become strings. ``None`` when ``text`` is strict JSON already or not JSON at all."""
    found = []

    def constant(name: str) -> float:
        found.append(name)
        return float(name)

    try:
        parsed = json.loads(text, parse_constant=constant)
    except (ValueError, RecursionError):
        return None
    if not found:
        return None
    try:
        return json.dumps(_finite_numbers(parsed), allow_nan=False)
    except (ValueError, RecursionError):
        return None


def _finite_numbers(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_numbers(item) for item in value]
    return value
