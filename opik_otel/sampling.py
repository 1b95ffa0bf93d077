"""Head sampling of local roots: ``configure(sample_rate=...)``.

The decision is a pure function of the OTel trace id (the same rule as OTel's
``TraceIdRatioBased``: the low 64 bits below ``rate * 2**64``), so every process that
samples one trace at the same rate agrees. Only local roots are sampled: a span linked
to an Opik trace from upstream (headers, baggage, ``@opik.track``, or
``attach_to_parent`` right after it starts) is always kept, and a sampled-out root takes
its whole subtree with it, so no trace is ever partial.
"""

import math
from typing import Any, Optional, Sequence

from opentelemetry.context import Context, get_current
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from .attributes import SAMPLED_OUT
from .errors import ConfigurationError
from .linkage import resolve_linkage, span_attributes

_BOUND = 1 << 64
_LOW_64_BITS = _BOUND - 1


def validated_sample_rate(sample_rate: Any) -> Optional[float]:
    """``sample_rate`` as a float in [0, 1], ``None`` for "keep every trace"."""
    if sample_rate is None:
        return None
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not math.isfinite(sample_rate):
        raise ConfigurationError(f"sample_rate must be a number from 0.0 to 1.0, not {sample_rate!r}.")
    if not 0.0 <= sample_rate <= 1.0:
        raise ConfigurationError(f"sample_rate must be from 0.0 (keep no trace) to 1.0 (keep all), not {sample_rate}.")
    return None if sample_rate == 1.0 else float(sample_rate)


def sampling_bound(sample_rate: float) -> int:
    """The bound :func:`is_sampled` compares against, computed once per rate."""
    return round(sample_rate * _BOUND)


def is_sampled(otel_trace_id: int, bound: int) -> bool:
    """Whether the trace with this OTel trace id is kept at the rate behind ``bound``."""
    return (otel_trace_id & _LOW_64_BITS) < bound


class OpikSampler(Sampler):
    """Head sampling of local roots at ``sample_rate``, the rest left to ``delegate``.

    A local root with no incoming Opik linkage that the trace id rules out is still
    recorded, marked :data:`~opik_otel.attributes.SAMPLED_OUT` (so that
    ``attach_to_parent`` right after it starts can still link it, and keep it); every
    span started under a root that is still marked is not recorded at all, which is what
    makes a sampled-out trace close to free. ``configure(sample_rate=...)`` installs it.

    Args:
        sample_rate: fraction (0..1) of local roots kept.
        delegate: decides every other span (default ``ParentBased(ALWAYS_ON)``, the SDK's).
    """

    def __init__(self, sample_rate: float, delegate: Optional[Sampler] = None) -> None:
        rate = validated_sample_rate(sample_rate)
        self._bound = _BOUND if rate is None else sampling_bound(rate)
        self._delegate = delegate if delegate is not None else ParentBased(ALWAYS_ON)
        self._marked = {SAMPLED_OUT: True}

    @property
    def delegate(self) -> Sampler:
        """The sampler deciding spans that are not local roots."""
        return self._delegate

    def should_sample(
        self,
        parent_context: Optional[Context],
        trace_id: int,
        name: str,
        kind: Optional[SpanKind] = None,
        attributes: Attributes = None,
        links: Optional[Sequence[Link]] = None,
        trace_state: Optional[TraceState] = None,
    ) -> SamplingResult:
        context = get_current() if parent_context is None else parent_context
        parent: Any = context.get(_SPAN_KEY)
        parent_span_context = parent.get_span_context() if parent is not None else None
        if parent_span_context is None or not parent_span_context.is_valid:
            if not is_sampled(trace_id, self._bound) and resolve_linkage(context) is None:
                return SamplingResult(Decision.RECORD_AND_SAMPLE, self._marked, trace_state)
        elif not parent_span_context.is_remote and SAMPLED_OUT in span_attributes(parent):
            return SamplingResult(Decision.DROP, None, trace_state)
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"OpikSampler(bound={self._bound}, delegate={self._delegate.get_description()})"


def installed_sampler(current: Sampler, sample_rate: Optional[float]) -> Sampler:
    """The provider sampler for ``sample_rate``: an :class:`OpikSampler` around the
    provider's own one, or that one again when sampling is off (``configure()`` anew after the
    first pipeline was shut down)."""
    base = current.delegate if isinstance(current, OpikSampler) else current
    return base if sample_rate is None else OpikSampler(sample_rate, base)
