"""``trace_attributes(...)``: thread, user, tags, metadata and project per request.

The values live in the OTel context (a ``contextvars`` variable underneath), so they
hold in every asyncio task and thread that inherits the context. When a local root
span starts inside the block, ``OpikSpanProcessor`` stamps the merged values on it as
private attributes; at export they become the root span's Opik fields and its trace
row's, and the private attributes are stripped (contract §4).
"""

import functools
import inspect
import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, cast

from opentelemetry.context import Context, attach, create_key, detach, get_current, set_value

from ._logging import get_logger
from .attributes import PROJECT_NAME, TRACE_ATTRIBUTES
from .jsontext import dump_json

LOGGER = get_logger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

TRACE_ATTRIBUTES_KEY = create_key("opik-trace-attributes")

_THREAD = "thread_id"
_TAGS = "tags"
_METADATA = "metadata"
_PROJECT = "project_name"
USER_ID_METADATA_KEY = "user_id"
# Header that carries propagate=True values to downstream opik_otel services; a
# hyphenated name, which proxies keep. Not W3C baggage: that would reach third parties.
TRACE_ATTRIBUTES_HEADER = "opik-trace-attributes"
MAX_HEADER_LENGTH = 4096


class TraceAttributes:
    """The merged values of the ``trace_attributes`` blocks around a point of the code.

    Immutable; the private span attributes are computed once per block, so a root span
    starting inside it pays one dict update.
    """

    __slots__ = ("thread_id", "tags", "metadata", "project_name", "propagate", "span_attributes")

    def __init__(
        self,
        thread_id: Optional[str],
        tags: Tuple[str, ...],
        metadata: Mapping[str, Any],
        project_name: Optional[str],
        propagate: bool = False,
    ) -> None:
        self.thread_id = thread_id
        self.tags = tags
        self.metadata = dict(metadata)
        self.project_name = project_name
        self.propagate = propagate
        fields: Dict[str, Any] = {}
        if thread_id is not None:
            fields[_THREAD] = thread_id
        if tags:
            fields[_TAGS] = list(tags)
        if self.metadata:
            fields[_METADATA] = self.metadata
        attributes: Dict[str, Any] = {}
        if fields:
            attributes[TRACE_ATTRIBUTES] = dump_json(fields)
        if project_name is not None:
            attributes[PROJECT_NAME] = project_name
        self.span_attributes = attributes

    def merged(self, inner: "TraceAttributes") -> "TraceAttributes":
        """``inner`` inside ``self``: inner scalars win, tags add up, metadata merges."""
        tags = self.tags + tuple(tag for tag in inner.tags if tag not in self.tags)
        return TraceAttributes(
            inner.thread_id if inner.thread_id is not None else self.thread_id,
            tags,
            {**self.metadata, **inner.metadata},
            inner.project_name if inner.project_name is not None else self.project_name,
            self.propagate or inner.propagate,
        )

    def header_value(self) -> Optional[str]:
        """The values as the ``opik-trace-attributes`` header (ASCII JSON), or ``None``
        when they would not fit one."""
        document: Dict[str, Any] = {}
        if self.thread_id is not None:
            document[_THREAD] = self.thread_id
        if self.tags:
            document[_TAGS] = list(self.tags)
        if self.metadata:
            document[_METADATA] = self.metadata
        if self.project_name is not None:
            document[_PROJECT] = self.project_name
        value = dump_json(document)
        if len(value) > MAX_HEADER_LENGTH:
            LOGGER.warning(
                "trace_attributes(propagate=True) values exceed %d bytes as a header; they are not sent downstream.",
                MAX_HEADER_LENGTH,
            )
            return None
        return value


class trace_attributes:  # noqa: N801 - used like a function: with trace_attributes(...):
    """Set the thread, user, tags, metadata or project of traces started inside.

    Use it as a context manager or as a decorator of sync and async functions::

        with opik_otel.trace_attributes(thread_id=conversation_id, user_id=user.id, tags=["beta"]):
            handle(request)

    Thread, tags, metadata and user (kept in the trace's metadata as ``user_id``: Opik
    has no user field) go to the trace row and root span of each trace rooted inside
    the block; ``project_name`` to every span of those traces. Nested blocks merge:
    the inner one wins for thread, user and project, tags add up, metadata keys merge.
    With ``propagate=True``, ``OpikPropagator`` carries the merged values to
    downstream opik_otel services in its own ``opik-trace-attributes`` header (never
    in W3C baggage), where traces rooted in the request's context get them too.
    Bad values are logged once and ignored; nothing here raises.
    """

    def __init__(
        self,
        thread_id: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        user_id: Optional[str] = None,
        project_name: Optional[str] = None,
        propagate: bool = False,
    ) -> None:
        meta = _metadata(metadata)
        user = _text("user_id", user_id)
        if user is not None:
            meta[USER_ID_METADATA_KEY] = user
        self._values = TraceAttributes(
            _text("thread_id", thread_id), _tags(tags), meta, _text("project_name", project_name), bool(propagate)
        )
        self._tokens: List[Any] = []

    def context(self, context: Optional[Context] = None) -> Context:
        """``context`` (default: the current one) with these values merged in."""
        base = get_current() if context is None else context
        outer = active_trace_attributes(base)
        values = self._values if outer is None else outer.merged(self._values)
        return set_value(TRACE_ATTRIBUTES_KEY, values, base)

    def __enter__(self) -> "trace_attributes":
        self._tokens.append(attach(self.context()))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._tokens:
            detach(self._tokens.pop())

    def __call__(self, function: F) -> F:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                token = attach(self.context())
                try:
                    return await function(*args, **kwargs)
                finally:
                    detach(token)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            token = attach(self.context())
            try:
                return function(*args, **kwargs)
            finally:
                detach(token)

        return run  # type: ignore[return-value]


def active_trace_attributes(context: Context) -> Optional[TraceAttributes]:
    """The values of the ``trace_attributes`` blocks around ``context``, if any."""
    return cast("Optional[TraceAttributes]", context.get(TRACE_ATTRIBUTES_KEY))


def root_trace_fields(attributes: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``thread_id`` / ``tags`` / ``metadata`` a root span's private attribute holds."""
    raw = attributes.get(TRACE_ATTRIBUTES)
    if not isinstance(raw, str):
        return {}
    try:
        fields = json.loads(raw)
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def _text(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and name != "project_name":
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    LOGGER.warning("trace_attributes(%s=...) must be a non-empty string, not %s; it is ignored.", name, type(value).__name__)
    return None


def _tags(tags: Any) -> Tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, (list, tuple, set, frozenset)):
        LOGGER.warning("trace_attributes(tags=...) must be a list of strings, not %s; it is ignored.", type(tags).__name__)
        return ()
    result: List[str] = []
    for tag in tags:
        if isinstance(tag, str) and tag.strip() and tag.strip() not in result:
            result.append(tag.strip())
        elif not isinstance(tag, str):
            LOGGER.warning("trace_attributes(tags=...) holds a %s; tags must be strings, it is ignored.", type(tag).__name__)
    return tuple(result)


def _metadata(metadata: Any) -> Dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        LOGGER.warning("trace_attributes(metadata=...) must be a mapping, not %s; it is ignored.", type(metadata).__name__)
        return {}
    return {str(key): value for key, value in metadata.items()}


def trace_options(
    tags: Sequence[str], metadata: Mapping[str, Any], thread_id: Optional[str], attributes: Mapping[str, Any]
) -> Tuple[List[str], Dict[str, Any], Optional[str]]:
    """A root span's trace-level options: the exporter's configured ones, then the
    ``trace_attributes`` block's (its tags added, its metadata and thread winning)."""
    fields = root_trace_fields(attributes)
    extra_tags = fields.get(_TAGS)
    merged_tags = list(tags)
    if isinstance(extra_tags, list):
        merged_tags += [tag for tag in extra_tags if isinstance(tag, str) and tag not in merged_tags]
    extra_metadata = fields.get(_METADATA)
    merged_metadata = {**metadata, **extra_metadata} if isinstance(extra_metadata, dict) else dict(metadata)
    thread = fields.get(_THREAD)
    return merged_tags, merged_metadata, thread if isinstance(thread, str) else thread_id


def trace_attributes_from_header(value: Any) -> Optional[TraceAttributes]:
    """The values an upstream service sent in ``opik-trace-attributes``, or ``None``.

    Untrusted input: anything but a JSON object of the expected shape within the size
    bound is ignored field by field, with one warning.
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str) or not value.strip():
        return None
    document = None
    if len(value) <= MAX_HEADER_LENGTH:
        try:
            document = json.loads(value)
        except (ValueError, RecursionError):
            pass
    if not isinstance(document, dict):
        LOGGER.warning("Header '%s' is not a JSON object of trace attributes; it is ignored.", TRACE_ATTRIBUTES_HEADER)
        return None
    return TraceAttributes(
        _text("thread_id", document.get(_THREAD)) if document.get(_THREAD) is not None else None,
        _tags(document.get(_TAGS)),
        _metadata(document.get(_METADATA)),
        _text("project_name", document.get(_PROJECT)) if document.get(_PROJECT) is not None else None,
        True,
    )
