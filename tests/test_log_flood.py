"""A public endpoint flooded with distinct bad Opik headers costs the host's logs a few lines.

A real WSGI server (wsgiref, which keeps underscore headers) instrumented the way a user
would: the global-style composite propagator with ``OpikPropagator``, a tracer provider
with ``OpikSpanProcessor``, ``attach_to_parent`` on the server span, a child span under
it. 10,000 requests over loopback each carry a *different* bad value.
"""

import http.client
import logging
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from opik_otel import attach_to_parent
from opik_otel.processor import OpikSpanProcessor
from opik_otel.propagator import OpikPropagator

REQUESTS = 10_000
TRACE = "0192f5e0-7b3c-7d4e-8f5a-1b2c3d4e5f6a"
# At most one line per cause (four causes below), plus slack for the one "held back"
# summary a cause may log when its interval ends during the run.
MAX_LINES = 8


class _EnvironGetter(Getter):
    def get(self, carrier, key):
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    def keys(self, carrier):
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


class _Counting(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


def _bad_headers(i):
    """A distinct bad value per request, cycling through four causes; some carry
    terminal escapes, which must never reach the log raw."""
    bad = f"bad-{i}" if i % 8 < 4 else f"\x1b[2Jevil{i}\x07"
    cause = i % 4
    if cause == 0:
        return {"opik_trace_id": bad}
    if cause == 1:
        return {"opik_trace_id": TRACE, "opik_parent_span_id": bad}
    if cause == 2:
        return {"baggage": f"opik.trace_id={bad.replace(chr(27), '').replace(chr(7), '')}"}
    return {"baggage": f"opik.trace_id={TRACE},opik.span_id=x{i}"}


@pytest.fixture
def server():
    provider = TracerProvider()
    provider.add_span_processor(OpikSpanProcessor())
    tracer = provider.get_tracer("tests.flood")
    propagator = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), OpikPropagator()])
    getter = _EnvironGetter()
    served = []

    def app(environ, start_response):
        context = propagator.extract(environ, getter=getter)
        with tracer.start_as_current_span("GET /", context=context) as span:
            attach_to_parent(span, environ)
            with tracer.start_as_current_span("handler"):
                served.append(1)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    httpd = make_server("127.0.0.1", 0, app, server_class=WSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd.server_address[1], served
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)
    provider.shutdown()


def test_ten_thousand_distinct_bad_headers_give_a_few_escaped_lines(server):
    port, served = server
    counting = _Counting()
    counting.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    package = logging.getLogger("opik_otel")
    package.addHandler(counting)
    previous = package.level
    package.setLevel(logging.WARNING)
    try:
        for i in range(REQUESTS):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/", headers=_bad_headers(i))
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            connection.close()
    finally:
        package.removeHandler(counting)
        package.setLevel(previous)
    assert len(served) == REQUESTS
    print(f"\n{REQUESTS} requests with distinct bad headers -> {len(counting.lines)} log lines")
    assert 4 <= len(counting.lines) <= MAX_LINES, counting.lines[:20]
    text = "\n".join(counting.lines)
    # Every cause names its header or entry once, with one example value...
    for name in ("'opik_trace_id'", "'opik_parent_span_id'", "'opik.trace_id'", "'opik.span_id'"):
        assert name in text
    # ... escaped: no terminal control character reaches the log.
    assert not any(ch in text for ch in "\x1b\x07\r"), text
    assert all("\n" not in line for line in counting.lines)
