"""Value types exchanged between the header helpers and OTel spans."""

from dataclasses import dataclass
from typing import Dict, Optional

from .attributes import OPIK_PARENT_SPAN_ID, OPIK_TRACE_ID, PROJECT_NAME


@dataclass(frozen=True)
class OpikDistributedTraceAttributes:
    """The Opik trace (and optional parent span) a boundary span must join.

    Both ids are canonical lower-case UUIDv7 strings when produced by
    :func:`opik_otel.extract_opik_distributed_trace_attributes`. ``opik_project_name``
    is the trace's project when the caller named it (opik_otel services do, the Opik
    SDK does not); ``None`` means this service's configured project.
    """

    opik_trace_id: str
    opik_parent_span_id: Optional[str] = None
    opik_project_name: Optional[str] = None

    def as_attributes(self) -> Dict[str, str]:
        """Return the OTel span attributes that place a span in this trace."""
        attributes = {OPIK_TRACE_ID: self.opik_trace_id}
        if self.opik_parent_span_id is not None:
            attributes[OPIK_PARENT_SPAN_ID] = self.opik_parent_span_id
        if self.opik_project_name is not None:
            attributes[PROJECT_NAME] = self.opik_project_name
        return attributes
