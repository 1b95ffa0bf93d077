"""Which Opik project a span belongs to, and how batches are split per project.

A trace lives in one project and its spans must be written to that project, or they
are orphans there (contract §9). One OTLP request goes to exactly one project (its
``projectName`` header), so the exporter sends one request per project of a batch.

The project travels with the Opik linkage: ``OpikSpanProcessor`` stamps it on each
span as the private attribute :data:`~opik_otel.attributes.PROJECT_NAME` (stripped
before export), and the distributed-trace helpers and ``OpikPropagator`` carry it to
the next service in the ``opik_project_name`` / ``opik-project-name`` headers and the
``opik.project_name`` baggage entry. The Opik SDK's own headers carry no project.

Everything here is pure: no I/O, no state.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar


OPIK_PROJECT_NAME_HEADER = "opik_project_name"
OPIK_PROJECT_NAME_HEADER_HYPHENATED = "opik-project-name"
# W3C baggage entry, next to opik.trace_id / opik.span_id.
OPIK_PROJECT_NAME_BAGGAGE = "opik.project_name"

# No configured project name is this long; the bound keeps a hostile upstream header
# from growing every request this process sends.
MAX_PROJECT_NAME_LENGTH = 256

SpanT = TypeVar("SpanT")


def usable_project_name(value: Any) -> Optional[str]:
    """``value`` as a project name Opik can be sent in a ``projectName`` header, or ``None``.

    Values come from other services' headers and baggage and from the Opik SDK, so
    anything that is not a non-blank, printable Latin-1 string of reasonable length
    (what an HTTP header can carry without corrupting the request) gives ``None``:
    the span then goes to the exporter's configured project.
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    name = value.strip()
    if not name or len(name) > MAX_PROJECT_NAME_LENGTH:
        return None
    if not name.isprintable() or any(ord(ch) > 0xFF for ch in name):
        return None
    return name


def first_of_joined_project(value: str) -> str:
    """Undo a WSGI server's joining of both header spellings: ``"p,p"`` → ``"p"``.

    Servers that keep underscores map ``opik_project_name`` and ``opik-project-name``
    to one ``HTTP_OPIK_PROJECT_NAME`` variable and join the two values with a comma.
    A project name may itself contain commas, so only an exact doubling is undone.
    """
    half, rest = divmod(len(value) - 1, 2)
    if rest == 0 and half > 0 and value[half] == "," and value[:half].strip() == value[half + 1 :].strip():
        return value[:half].strip()
    return value


def group_by_project(
    spans: Sequence[SpanT], default: str, project_of: Callable[[SpanT], Optional[str]]
) -> Dict[str, List[SpanT]]:
    """Spans grouped by the project they go to, in first-seen order; order kept within.

    Args:
        spans: the batch.
        default: the exporter's configured project, for spans that name none.
        project_of: reads the project a span names (``None``: none).
    """
    groups: Dict[str, List[SpanT]] = {}
    for span in spans:
        groups.setdefault(project_of(span) or default, []).append(span)
    return groups
