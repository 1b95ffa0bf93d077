"""Head sampling of local roots: ``configure(sample_rate=...)``.

The decision is a pure function of the OTel trace id (the same rule as OTel's
``TraceIdRatioBased``: the low 64 bits below ``rate * 2**64``), so every process that
samples one trace at the same rate agrees. Only local roots are sampled: a span linked
to an Opik trace from upstream (headers, baggage, ``@opik.track``, or
``attach_to_parent`` right after it starts) is always kept, and a sampled-out root takes
its whole subtree with it, so no trace is ever partial.
"""

import math
from typing import Any, Optional

from .config import ConfigurationError

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
