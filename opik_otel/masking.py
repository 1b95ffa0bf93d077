"""Masking at export: credentials scrubbed, a user ``mask`` and the Opik SDK's
anonymizers applied to span, event and link attribute values, on the export thread.

Opik's own keys (``opik.*`` ids, tags and metadata, ``gen_ai.usage.*``, the thread keys)
are never scrubbed nor passed to ``mask``: usage *tokens* are not secrets. A hook that
raises replaces the value with :data:`MASK_FAILED` (one warning per cause), so nothing
unmasked is ever sent because a hook failed.
"""

import re
import sys
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link

from ._logging import get_logger
from .errors import ConfigurationError
from .repairs import repaired_text
from .linkage import may_hold_items
from .trace_rows import OUTPUT_PREFIXES, THREAD_ID_ATTRIBUTES

LOGGER = get_logger(__name__)

MaskFunction = Callable[[str, Any], Any]
Scrub = Union[bool, Sequence[str]]

REDACTED = "[REDACTED by opik_otel]"
MASK_FAILED = "[masking failed: value withheld by opik_otel]"

# Key parts naming a credential, matched anywhere in the lower-cased key.
DEFAULT_SCRUB_PATTERNS = (
    r"authorization",
    r"cookie",
    r"passw(?:or)?d",
    r"secret",
    r"api[-_. ]?key",
    r"(?:access|refresh|auth|id|bearer|session|csrf|xsrf)[-_. ]?token",
    r"private[-_. ]?key",
    r"credential",
    r"bearer",
)
_OPIK_PREFIXES = ("opik.", "opik_otel.", "gen_ai.usage.")
_OPIK_KEYS = frozenset(THREAD_ID_ATTRIBUTES)
_OPIK, _SECRET, _INPUT, _OUTPUT = "opik", "secret", "input", "output"
_CACHE_LIMIT = 4096


def registered_anonymizers() -> List[Any]:
    """The Opik SDK's registered anonymizers when the application imported it."""
    hooks = sys.modules.get("opik.hooks")
    if hooks is None:
        return []
    try:
        return list(hooks.get_anonymizers()) if hooks.has_anonymizers() else []
    except Exception:
        return []


class Masker:
    """Applies scrubbing, ``mask`` and the SDK anonymizers to finished spans.

    Args:
        mask: ``(key, value) -> value`` for every attribute value that is not Opik's.
        scrub: ``True`` (credential keys, :data:`DEFAULT_SCRUB_PATTERNS`), ``False``
            (off) or extra regular expressions matched in the lower-cased key, added to
            the default ones.
    """

    def __init__(self, mask: Optional[MaskFunction] = None, scrub: Scrub = True) -> None:
        if mask is not None and not callable(mask):
            raise ConfigurationError(f"mask must be a callable (key, value) -> value, not {type(mask).__name__}.")
        self._mask = mask
        self._scrub = _scrub_matcher(scrub)
        self._kinds: Dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Masker(mask={self._mask!r}, scrub={self._scrub is not None})"

    @property
    def active(self) -> bool:
        """Whether anything can change: scrubbing, a mask, or registered anonymizers."""
        return self._scrub is not None or self._mask is not None or bool(registered_anonymizers())

    def rewrites_values(self, anonymizers: List[Any]) -> bool:
        """Whether any value can change other than by scrubbing (a mask, or the SDK's
        ``anonymizers`` as :func:`registered_anonymizers` found them for this batch)."""
        return self._mask is not None or bool(anonymizers)

    def is_secret(self, key: str) -> bool:
        """Whether scrubbing replaces the value of span attribute ``key``."""
        return self._kind(key) == _SECRET

    def attribute_changes(self, attributes: Mapping[str, Any], changes: Dict[str, Any], anonymizers: List[Any]) -> None:
        """Add to ``changes`` the masked values of ``attributes`` (keys already changed skipped)."""
        for key, value in attributes.items():
            if key in changes:
                continue
            masked = self._value(key, value, anonymizers, io=True)
            if masked is not value:
                changes[key] = masked

    def events_and_links(
        self, span: ReadableSpan, anonymizers: List[Any]
    ) -> Tuple[Optional[List[Event]], Optional[List[Link]]]:
        """Masked copies of the span's events and links, ``None`` where nothing changed."""
        events: Optional[List[Event]] = None
        for index, event in enumerate((span.events or ()) if may_hold_items(getattr(span, "_events", True)) else ()):
            masked = self._mapping(event.attributes, anonymizers)
            if masked is not None:
                if events is None:
                    events = list(span.events)
                events[index] = Event(event.name, masked, event.timestamp)
        links: Optional[List[Link]] = None
        for index, link in enumerate((span.links or ()) if may_hold_items(getattr(span, "_links", True)) else ()):
            masked = self._mapping(link.attributes, anonymizers)
            if masked is not None:
                if links is None:
                    links = list(span.links)
                links[index] = Link(link.context, masked)
        return events, links

    def _mapping(self, attributes: Optional[Mapping[str, Any]], anonymizers: List[Any]) -> Optional[Dict[str, Any]]:
        changed = False
        result: Dict[str, Any] = {}
        for key, value in (attributes or {}).items():
            masked = self._value(key, value, anonymizers, io=False)
            changed = changed or masked is not value
            result[key] = masked
        return result if changed else None

    def _value(self, key: Any, value: Any, anonymizers: List[Any], io: bool) -> Any:
        if type(key) is not str:
            # Judged by the text it is sent under (others' plain-dict events and links).
            key = repaired_text(key)
        kind = self._kind(key)
        if kind == _OPIK:
            return value
        if kind == _SECRET:
            return REDACTED
        if self._mask is not None:
            try:
                value = sendable(self._mask(key, value))
            except Exception:
                LOGGER.warning(
                    "mask raised on attribute %.80r; its value was withheld. Fix the mask function.", key, exc_info=True
                )
                return MASK_FAILED
        if io and anonymizers and isinstance(value, (str, tuple, list)):
            try:
                data: Any = value if isinstance(value, str) else list(value)
                for anonymizer in anonymizers:
                    data = anonymizer.anonymize(data, field_name=kind, object_type="span")
                value = sendable(data)
            except Exception:
                LOGGER.warning(
                    "An Opik SDK anonymizer raised on attribute %.80r; its value was withheld.", key, exc_info=True
                )
                return MASK_FAILED
        return value

    def _kind(self, key: str) -> str:
        kind = self._kinds.get(key)
        if kind is None:
            if key.startswith(_OPIK_PREFIXES) or key in _OPIK_KEYS:
                kind = _OPIK
            elif self._scrub is not None and self._scrub(key.lower()):
                kind = _SECRET
            else:
                kind = _OUTPUT if key.startswith(OUTPUT_PREFIXES) else _INPUT
            if len(self._kinds) >= _CACHE_LIMIT:
                self._kinds.clear()
            self._kinds[key] = kind
        return kind


def sendable(value: Any) -> Any:
    """A hook's result as an OTel attribute value: scalars and flat sequences as they
    are (sequences as tuples), anything else as its text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return "" if value is None else value
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    if isinstance(value, (list, tuple)) and all(
        isinstance(item, (int, float)) and not isinstance(item, bool) for item in value
    ):
        return tuple(value)
    if isinstance(value, (list, tuple)) and all(isinstance(item, bool) for item in value):
        return tuple(value)
    return str(value)


def _scrub_matcher(scrub: Any) -> Optional[Callable[[str], Any]]:
    if scrub is False:
        return None
    patterns: Iterable[str] = DEFAULT_SCRUB_PATTERNS
    if scrub is not True:
        if isinstance(scrub, str) or not isinstance(scrub, (list, tuple, set, frozenset)):
            raise ConfigurationError(
                f"scrub must be True, False or a list of extra key patterns (regular expressions), not {scrub!r}."
            )
        extra = list(scrub)
        for pattern in extra:
            if not isinstance(pattern, str):
                raise ConfigurationError(f"scrub patterns must be strings, not {type(pattern).__name__}.")
            try:
                re.compile(pattern)
            except re.error as error:
                raise ConfigurationError(f"scrub pattern {pattern!r} is not a regular expression ({error}).") from None
        patterns = (*DEFAULT_SCRUB_PATTERNS, *(pattern.lower() for pattern in extra))
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns)).search
