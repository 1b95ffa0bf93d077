"""An embedded, in-process stand-in for Opik's ingest API, for tests and demos.

:class:`LocalOpik` runs a small HTTP server on ``127.0.0.1`` that accepts what Opik's
backend accepts (OTLP/HTTP traces, and the REST trace/span batch endpoints), maps the
data the way the backend does (ids, thread, tags, metadata, input/output, errors) and
keeps everything in memory so a test can ask "which traces, spans and orphans would
Opik show?"::

    with LocalOpik() as opik:
        exporter = OTLPSpanExporter(endpoint=opik.otlp_traces_endpoint)
        ...
        assert opik.wait_for_spans(2)
        print(opik.tree(opik.traces()[0].id))
        assert not opik.orphans()

It also injects faults (error statuses with ``Retry-After``, refused connections, slow
responses, body-size limits) so retry and buffering code can be exercised for real.

Run ``python -m opik_otel.testing`` to get a throw-away server in a terminal; Ctrl-C
prints every trace it received.

The package is laid out by concern: ``server`` (the HTTP endpoints and fault injection),
``store`` (the rows and Opik's ingest rules), ``mapping`` (what the backend makes of one
span), ``decoding`` (request bodies), ``records``, ``tree`` and ``cli``.
"""

from opik_otel.testing.cli import main
from opik_otel.testing.decoding import otlp_json_to_request
from opik_otel.testing.mapping import (
    MappedAttributes,
    ResolvedIds,
    derived_uuid_v7,
    map_attributes,
    parse_tags,
    resolve_span_ids,
)
from opik_otel.testing.records import RequestRecord, SpanRecord, TraceRecord
from opik_otel.testing.server import DEFAULT_PROJECT, DEFAULT_WORKSPACE, LocalOpik
from opik_otel.testing.tree import render_tree

__all__ = [
    "DEFAULT_PROJECT",
    "DEFAULT_WORKSPACE",
    "LocalOpik",
    "MappedAttributes",
    "RequestRecord",
    "ResolvedIds",
    "SpanRecord",
    "TraceRecord",
    "derived_uuid_v7",
    "main",
    "map_attributes",
    "otlp_json_to_request",
    "parse_tags",
    "render_tree",
    "resolve_span_ids",
]
