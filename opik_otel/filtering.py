"""Which spans ``span_filter`` keeps, decided when a span starts.

``span_filter="llm"`` keeps what an LLM-observability user looks at: spans with
``gen_ai.*`` / ``llm.*`` / OpenInference attributes known at start, spans from known LLM
instrumentation scopes, spans linked to Opik from outside (boundaries, children of an
``@opik.track`` function) and local roots; HTTP, DB and framework spans are left out.
A callable ``(span) -> bool`` decides by itself.

Dropping never orphans anything: :class:`~opik_otel.shaping.SpanShaper` gives a dropped
span its nearest kept ancestor's Opik id, so its descendants chain past it, and the
exporter leaves it out (it carries :data:`~opik_otel.attributes.DROPPED_SPAN`).
"""

import re
from typing import Any, Callable, Optional, Union

from opentelemetry.sdk.trace import ReadableSpan

from ._logging import get_logger
from .errors import ConfigurationError
from .linkage import span_attributes

LOGGER = get_logger(__name__)

SpanPredicate = Callable[[ReadableSpan], bool]
SpanFilter = Union[None, str, SpanPredicate]

LLM = "llm"

# Instrumentation scopes whose spans are LLM work: OpenInference, OpenLLMetry/Traceloop
# and the OpenTelemetry GenAI instrumentations (both name theirs
# ``opentelemetry.instrumentation.<provider or framework>``), Logfire's LLM
# instrumentations and Pydantic AI, LiteLLM, and a few frameworks with their own tracer.
_LLM_SCOPE_PREFIXES = (
    "openinference",
    "traceloop",
    "litellm",
    "pydantic-ai",
    "pydantic_ai",
    "logfire.openai",
    "logfire.anthropic",
    "langsmith",
    "haystack",
    "strands-agents",
) + tuple(
    "opentelemetry.instrumentation." + name
    for name in (
        "openai", "openai_v2", "openai_agents", "anthropic", "bedrock", "cohere", "google_genai",
        "google_generativeai", "vertexai", "groq", "mistralai", "ollama", "together", "replicate",
        "langchain", "llamaindex", "haystack", "crewai", "transformers", "watsonx", "alephalpha",
        "sagemaker", "mcp", "agno", "litellm", "writer",
    )
)
# A prefix matches the whole name or up to a separator: "openai" must not take "openairline".
_LLM_SCOPE = re.compile(
    "(?:" + "|".join(re.escape(prefix) for prefix in _LLM_SCOPE_PREFIXES) + r")(?:$|[._\-/])"
).match
_LLM_ATTRIBUTE_PREFIXES = ("gen_ai.", "llm.")
_LLM_ATTRIBUTES = frozenset(
    {"input.value", "output.value", "openinference.span.kind", "traceloop.span.kind", "traceloop.entity.name"}
)


def validated_span_filter(span_filter: Any) -> SpanFilter:
    """``span_filter`` as given, or :class:`ConfigurationError` saying what is allowed."""
    if span_filter is None or span_filter == LLM or (callable(span_filter) and not isinstance(span_filter, str)):
        return span_filter  # type: ignore[no-any-return]
    raise ConfigurationError(
        f"span_filter must be None (export every span), 'llm' or a callable (span) -> bool, not {span_filter!r}."
    )


def is_llm_span(span: Any) -> bool:
    """Whether ``span`` (as it starts) is LLM work by its scope or its attributes."""
    scope = getattr(span, "instrumentation_scope", None)
    name = getattr(scope, "name", None)
    if isinstance(name, str) and _LLM_SCOPE(name):
        return True
    for key in span_attributes(span):
        if key.startswith(_LLM_ATTRIBUTE_PREFIXES) or key in _LLM_ATTRIBUTES:
            return True
    return False


def keeps(predicate: SpanPredicate, span: Any) -> bool:
    """Ask a user predicate about a starting span; one that raises keeps the span."""
    try:
        return bool(predicate(span))
    except Exception:
        # One line per filter, not per span: the rate limit keys on the arguments.
        LOGGER.warning(
            "span_filter %.80r raised; the span is kept. Fix the filter "
            "(it is called with each span as it starts).",
            predicate,
            exc_info=True,
        )
        return True


def filter_predicate(span_filter: SpanFilter) -> Optional[SpanPredicate]:
    """The predicate behind a validated ``span_filter`` (``None``: keep everything)."""
    if span_filter is None:
        return None
    if span_filter == LLM:
        return is_llm_span
    return span_filter  # type: ignore[return-value]
