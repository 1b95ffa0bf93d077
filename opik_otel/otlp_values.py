"""Protobuf wire-format pieces for OTLP: varints, ``AnyValue`` and attribute lists.

Everything returns finished ``bytes`` in the exact layout the protobuf runtime writes
for the message the OpenTelemetry encoder would build (fields in number order, oneof
members written even when they hold a default value), so that the bytes decode to an
equal message. See :mod:`opik_otel.otlp_wire` for the request around them.
"""

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Dict, List, Optional

from ._logging import get_logger

LOGGER = get_logger(__name__)

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_TWO_TO_64 = 1 << 64

DOUBLE = struct.Struct("<d").pack
FIXED64 = struct.Struct("<Q").pack
FIXED32 = struct.Struct("<I").pack


def _slow_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Lengths and small ints below this come from a table: most strings, all counts.
SMALL = 1 << 14
VARINTS = tuple(_slow_varint(number) for number in range(SMALL))
# 1 + the varint length of n: the bytes a length-delimited tag and length add to n bytes.
_PREFIX = tuple(1 + len(encoded) for encoded in VARINTS)
# Inlined strings stay short enough that every enclosing length is in the table.
_INLINE = SMALL - 1024


def varint(value: int) -> bytes:
    """The unsigned varint encoding of ``value`` (0 ≤ value < 2**64)."""
    return VARINTS[value] if value < SMALL else _slow_varint(value)


def field(tag: bytes, content: bytes) -> bytes:
    """A length-delimited field: ``tag``, the length of ``content``, ``content``."""
    size = len(content)
    return tag + (VARINTS[size] if size < SMALL else _slow_varint(size)) + content


class Unencodable(Exception):
    """A value the OTLP protobuf encoder refuses (an int beyond 64 bits, a type OTLP has no field for)."""


# AnyValue field tags: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7.
_STRING, _INT, _DOUBLE, _ARRAY, _KVLIST, _BYTES = b"\x0a", b"\x18", b"\x21", b"\x2a", b"\x32", b"\x3a"
_TRUE, _FALSE, _NONE = b"\x10\x01", b"\x10\x00", b""
# KeyValue: key 1, value 2; ArrayValue.values and KeyValueList.values: 1.
_KEY, _VALUE, _ITEM = b"\x0a", b"\x12", b"\x0a"


def any_value(value: Any) -> bytes:
    """The ``AnyValue`` message for ``value``, as OTel's ``_encode_value`` builds it.

    Raises:
        Unencodable: an int outside int64 or a type without an OTLP field.
        UnicodeEncodeError: text with lone surrogates.
    """
    kind = type(value)
    if kind is str:
        data: bytes = value.encode("utf-8")
        size = len(data)
        return _STRING + (VARINTS[size] if size < SMALL else _slow_varint(size)) + data
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is int:
        return _int_value(value)
    if kind is float:
        return _DOUBLE + DOUBLE(value)
    if kind is tuple or kind is list:
        return field(_ARRAY, b"".join([field(_ITEM, any_value(item)) for item in value]))
    if value is None:
        return _NONE
    return _other_value(value)


def _int_value(value: int) -> bytes:
    if 0 <= value < SMALL:
        return _INT + VARINTS[value]
    if value < 0:
        if value < _INT64_MIN:
            raise Unencodable("int below -2**63")
        return _INT + _slow_varint(value + _TWO_TO_64)
    if value > _INT64_MAX:
        raise Unencodable("int above 2**63 - 1")
    return _INT + _slow_varint(value)


def _other_value(value: Any) -> bytes:
    """Subclasses and the rarer types, checked in the OTel encoder's order."""
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, str):
        return field(_STRING, value.encode("utf-8"))
    if isinstance(value, int):
        return _int_value(int(value))
    if isinstance(value, float):
        return _DOUBLE + DOUBLE(value)
    if isinstance(value, bytes):
        return field(_BYTES, bytes(value))
    if isinstance(value, Sequence):
        return field(_ARRAY, b"".join([field(_ITEM, any_value(item)) for item in value]))
    if isinstance(value, Mapping):
        if not all(type(key) is str and key for key in value):
            # Keys the SDK would clean (empty, not text): the repair path rebuilds the value.
            raise Unencodable("mapping key is not a non-empty string")
        return field(_KVLIST, b"".join([field(_ITEM, key_value(str(key), item)) for key, item in value.items()]))
    raise Unencodable(f"no OTLP value type for {type(value).__name__}")


def key_value(key: str, value: Any) -> bytes:
    """The ``KeyValue`` message for one attribute."""
    if not isinstance(key, str):
        raise Unencodable("attribute key is not a string")
    head = field(_KEY, key.encode("utf-8")) if key else b""
    return head + field(_VALUE, any_value(value))


class AttributeWriter:
    """Writes attribute lists, remembering the encoded form of keys it has seen.

    Attribute keys repeat from span to span, so their ``KeyValue.key`` field is
    encoded once. The memo is bounded; a writer belongs to one encoder (one thread).
    """

    MEMO_LIMIT = 4096

    def __init__(self) -> None:
        self._keys: Dict[str, bytes] = {}

    def key_field(self, key: str) -> bytes:
        """The ``KeyValue.key`` field of ``key`` followed by the ``value`` tag."""
        encoded = self._keys.get(key)
        if encoded is None:
            if not isinstance(key, str) or not key:
                # The SDK refuses empty keys too; the repair path leaves them out.
                raise Unencodable("attribute key is not a non-empty string")
            encoded = field(_KEY, key.encode("utf-8")) + _VALUE
            if len(self._keys) >= self.MEMO_LIMIT:
                self._keys.clear()
            self._keys[key] = encoded
        return encoded

    def strict(self, parts: List[bytes], tag: bytes, attributes: Any, changes: Optional[Mapping[str, Any]] = None) -> None:
        """Append each attribute to ``parts`` as a ``tag`` field, ``changes`` applied (a
        ``None`` value removes the key, a new key goes after the others).

        Raises on the first value that cannot be encoded, with ``parts`` partly
        extended: the caller truncates it and repairs.
        """
        if changes:
            items: Any = []
            for key, value in attributes.items() if attributes else ():
                if key in changes:
                    value = changes[key]
                    if value is None:
                        continue
                items.append((key, value))
            for key, value in changes.items():
                if value is not None and (not attributes or key not in attributes):
                    items.append((key, value))
        elif attributes:
            items = attributes.items()
        else:
            return
        memo = self._keys
        extend = parts.extend
        for key, value in items:
            head = memo.get(key)
            if head is None:
                head = self.key_field(key)
            kind = type(value)
            # Strings and small ints inlined: they are nearly every attribute.
            if kind is str:
                data = value.encode("utf-8")
                size = len(data)
                if size < _INLINE:
                    inner = size + _PREFIX[size]
                    total = len(head) + inner + _PREFIX[inner] - 1
                    extend((tag, VARINTS[total], head, VARINTS[inner], _STRING, VARINTS[size], data))
                    continue
            elif kind is int and 0 <= value < SMALL:
                content = _INT + VARINTS[value]
                extend((tag, VARINTS[len(head) + len(content) + 1], head, VARINTS[len(content)], content))
                continue
            content = any_value(value)
            size = len(content)
            length = VARINTS[size] if size < SMALL else _slow_varint(size)
            total = len(head) + len(length) + size
            extend((tag, VARINTS[total] if total < SMALL else _slow_varint(total), head, length, content))

    def lenient(self, parts: List[bytes], tag: bytes, attributes: Optional[Mapping[str, Any]], where: str) -> None:
        """Like :meth:`strict`, but an attribute that cannot be encoded is left out
        (as the OTel encoder does), with one rate-limited warning and no traceback."""
        for key, value in (attributes or {}).items():
            try:
                parts.append(field(tag, self.key_field(key) + field_any(value)))
            except Exception as error:
                LOGGER.warning(
                    "A %s attribute has a value OTLP cannot carry (%s); it is left out of the export.",
                    where,
                    type(error).__name__,
                )


def field_any(value: Any) -> bytes:
    """The ``KeyValue.value`` field's length and content (the tag comes with the key)."""
    content = any_value(value)
    size = len(content)
    return (VARINTS[size] if size < SMALL else _slow_varint(size)) + content

