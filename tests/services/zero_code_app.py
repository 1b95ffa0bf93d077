"""A zero-code app for tests/test_zero_code.py: run it under ``opentelemetry-instrument``.

The "application" part imports nothing from opik_otel and never configures
OpenTelemetry: everything comes from environment variables and entry points. It
plays a server whose request carries Opik headers (``opentelemetry.propagate.extract``
on a WSGI ``environ`` with a WSGI getter, as the WSGI/Flask instrumentation does), handles it
in a SERVER span with a child span, and calls a downstream service, through the
``requests`` instrumentation when it is installed and ``propagate.inject`` otherwise.

The inspection part adds an in-memory exporter to whatever global provider the
machinery built and prints one JSON object on a stdout line starting with
``ZERO_CODE_RESULT`` (a console exporter may print spans after it)::

    ZERO_CODE_RESULT {"provider": ..., "processors": [...], "propagators": [...], "spans": {...},
     "downstream_headers": {...}, "requests_instrumented": ...}

Usage: ``python zero_code_app.py TRACE_ID PARENT_SPAN_ID`` (the upstream Opik ids).
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class WSGIGetter(Getter[dict]):
    """Reads headers from a WSGI environ, as opentelemetry-instrumentation-wsgi's does."""

    def get(self, carrier, key):
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    def keys(self, carrier):
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


class _Downstream(BaseHTTPRequestHandler):
    """Records the headers of each request it receives."""

    received: list = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        _Downstream.received.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format, *args):  # noqa: A002
        pass


def _processors(provider):
    active = getattr(provider, "_active_span_processor", None)
    return [type(p).__name__ for p in getattr(active, "_span_processors", ())]


def _propagators():
    textmap = propagate.get_global_textmap()
    inner = getattr(textmap, "_propagators", [textmap])
    return [repr(p) if "Opik" in type(p).__name__ else type(p).__name__ for p in inner]


def main() -> None:
    trace_id, parent_span_id = sys.argv[1], sys.argv[2]
    provider = trace.get_tracer_provider()
    processors = _processors(provider)  # before the inspection processor is added
    exporter = InMemorySpanExporter()
    if hasattr(provider, "add_span_processor"):
        provider.add_span_processor(SimpleSpanProcessor(exporter))

    server = HTTPServer(("127.0.0.1", 0), _Downstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/downstream"

    try:
        import requests
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        requests_instrumented = RequestsInstrumentor().is_instrumented_by_opentelemetry
    except ImportError:
        requests_instrumented = False

    # What gunicorn hands the app: hyphenated headers only, as WSGI variables.
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/work",
        "HTTP_TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "HTTP_OPIK_TRACE_ID": trace_id,
        "HTTP_OPIK_PARENT_SPAN_ID": parent_span_id,
    }
    tracer = trace.get_tracer("zero_code_app")
    with tracer.start_as_current_span(
        "GET /work", context=propagate.extract(environ, getter=WSGIGetter()), kind=trace.SpanKind.SERVER
    ):
        with tracer.start_as_current_span("handler"):
            if requests_instrumented:
                requests.get(url, timeout=10)
            else:
                with tracer.start_as_current_span("GET", kind=trace.SpanKind.CLIENT):
                    headers: dict = {}
                    propagate.inject(headers)
                    _Downstream.received.append({k.lower(): v for k, v in headers.items()})
    server.shutdown()

    spans = {
        span.name: {
            "kind": span.kind.name,
            "otel_span_id": format(span.context.span_id, "016x"),
            "otel_parent_id": format(span.parent.span_id, "016x") if span.parent else None,
            "attributes": {k: v for k, v in (span.attributes or {}).items() if k.startswith("opik.")},
        }
        for span in exporter.get_finished_spans()
    }
    print(
        "ZERO_CODE_RESULT",
        json.dumps(
            {
                "provider": type(provider).__name__,
                "processors": processors,
                "propagators": _propagators(),
                "spans": spans,
                "downstream_headers": _Downstream.received[-1] if _Downstream.received else {},
                "requests_instrumented": requests_instrumented,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
