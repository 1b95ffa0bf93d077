"""Zero-code roots are real Opik traces.

A Flask service run under ``opentelemetry-instrument`` with ``OTEL_TRACES_EXPORTER=opik``
gets a plain request (no tracing headers) and calls an Opik SDK service
(``@opik.track(opik_distributed_trace_headers=...)``). The zero-code side mints the
Opik trace, writes its row and sends Opik's headers, so the SDK service joins it: one
trace, no orphans. Served by wsgiref and by gunicorn (forked worker).
"""

import signal
import sys
from pathlib import Path

import pytest
import requests

from helpers import SERVICE_PROJECT, app_env, running_service
from test_multi_service import GUNICORN, GUNICORN_PORT_LINE, INSTRUMENT, PORT_LINE, Service

SERVICES = Path(__file__).parent / "services"

pytestmark = pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrument is not installed")


@pytest.fixture
def sdk_service(opik, tmp_path):
    pytest.importorskip("opik")
    with running_service(SERVICES / "otel_first_opik_sdk_server.py", app_env(opik, tmp_path, "sdk")) as url:
        yield url


@pytest.mark.parametrize("server", ["wsgiref", "gunicorn"])
def test_zero_code_root_calling_an_opik_sdk_service_makes_one_trace(opik, tmp_path, sdk_service, server):
    env = {
        **app_env(opik, tmp_path, "zero-code"),
        "OTEL_SERVICE_NAME": "zero-code-root",
        "OTEL_TRACES_EXPORTER": "opik",
        "OTEL_PROPAGATORS": "tracecontext,baggage,opik",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "DOWNSTREAM_URL": sdk_service,
    }
    if server == "gunicorn":
        if not GUNICORN.exists():
            pytest.skip("gunicorn is not installed")
        command = [str(INSTRUMENT), str(GUNICORN), "-b", "127.0.0.1:0", "zero_code_root_app:app"]
        pattern = GUNICORN_PORT_LINE
    else:
        command = [str(INSTRUMENT), sys.executable, str(SERVICES / "zero_code_root_app.py")]
        pattern = PORT_LINE
    service = Service("zero-code root", command, env, cwd=SERVICES)
    try:
        port = service.wait_for_port(pattern)
        reply = requests.get(f"http://127.0.0.1:{port}/start", timeout=30).json()  # like curl: no headers
        trace_id = reply["trace_id"]
        assert trace_id is not None, service.output  # get_opik_trace_id() works in zero-code mode
        assert reply["headers"]["opik_trace_id"] == trace_id
        assert reply["downstream"]["received"]["opik_trace_id"] == trace_id  # the propagator sent it
        # Server span, requests' client span, and the SDK's two spans.
        assert opik.wait_for_spans(4, timeout=30), opik.trees()
    finally:
        service.interrupt(signal.SIGINT)
        service.wait_stopped()
        service.kill()

    trees = opik.trees()
    (row,) = opik.traces()
    assert row.id == trace_id and row.name == "GET /start", trees  # written by the zero-code side
    assert opik.stats["traces_written"] == 1, trees  # the SDK consumer writes no row
    spans = {s.name: s for s in opik.spans()}
    assert {s.trace_id for s in spans.values()} == {trace_id}, trees
    assert spans["sdk-handle"].parent_span_id == spans["GET"].id, trees
    assert spans["GET"].parent_span_id == spans["GET /start"].id, trees
    assert {s.project_name for s in spans.values()} == {SERVICE_PROJECT}
    assert opik.orphans() == [], trees
