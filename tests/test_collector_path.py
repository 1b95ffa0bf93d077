"""Spans through an OpenTelemetry Collector, trace rows straight to Opik (issue 3, point 4).

A real Collector binary cannot be downloaded here, so a stand-in plays its part: an HTTP
server that receives OTLP/HTTP on ``/v1/traces`` and forwards each body, with the Opik
headers from ``examples/collector/otel-collector-config.yaml`` (``${env:...}`` expanded),
to the ``traces_endpoint`` that file names, as the ``otlphttp`` exporter does.
"""

import http.client
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.trace import TracerProvider

from opik_otel import configure, get_opik_trace_id
from opik_otel.testing import LocalOpik

pytestmark = pytest.mark.usefixtures("isolated_opik_settings")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "collector"
CONFIG_FILE = EXAMPLE / "otel-collector-config.yaml"
KEY = "sk-collector-Hh4mP2wX9-secret"
PROJECT = "via-collector"
WORKSPACE = "collector-ws"
OTLP_PATH = "/api/v1/private/otel/v1/traces"
TRACES_PATH = "/api/v1/private/traces/batch"
COLLECTOR_AGENT = "stand-in-collector/1.0"

# What the example config says; used as the stand-in's setup when PyYAML is missing.
FALLBACK_EXPORTER = {
    "traces_endpoint": "${env:OPIK_URL}/v1/private/otel/v1/traces",
    "headers": {
        "Authorization": "${env:OPIK_API_KEY}",
        "Comet-Workspace": "${env:OPIK_WORKSPACE}",
        "projectName": "${env:OPIK_PROJECT_NAME}",
    },
}


def load_config():
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(CONFIG_FILE.read_text(encoding="utf-8"))


def exporter_settings():
    try:
        import yaml
    except ImportError:
        return FALLBACK_EXPORTER
    return yaml.safe_load(CONFIG_FILE.read_text(encoding="utf-8"))["exporters"]["otlphttp"]


def expand(template, env):
    """The Collector's ``${env:NAME}`` substitution."""
    return re.sub(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), template)


class StandInCollector:
    """OTLP/HTTP receiver on /v1/traces that forwards to Opik like the otlphttp exporter."""

    def __init__(self, env):
        settings = exporter_settings()
        self.target = expand(settings["traces_endpoint"], env)
        self.forward_headers = {name: expand(value, env) for name, value in settings["headers"].items()}
        self.received = []  # headers of each request the app sent to the Collector
        self.forwarded_statuses = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                collector.received.append(dict(self.headers.items()))
                if self.path != "/v1/traces":
                    self._answer(404)
                    return
                self._answer(collector.forward(body, self.headers))

            def _answer(self, status):
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.traces_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def forward(self, body, incoming):
        parts = urlsplit(self.target)
        headers = {
            "Content-Type": incoming.get("Content-Type", "application/x-protobuf"),
            "User-Agent": COLLECTOR_AGENT,
            **{name: value for name, value in self.forward_headers.items() if value},
        }
        if incoming.get("Content-Encoding"):
            headers["Content-Encoding"] = incoming["Content-Encoding"]
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            connection.request("POST", parts.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            status = response.status
        finally:
            connection.close()
        self.forwarded_statuses.append(status)
        # The otlp receiver answers 200 once its pipeline accepted the data.
        return 200 if status < 300 else 503

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def opik():
    with LocalOpik(api_key=KEY) as server:
        yield server


@pytest.fixture
def collector(opik):
    stand_in = StandInCollector(
        {"OPIK_URL": opik.url, "OPIK_API_KEY": KEY, "OPIK_WORKSPACE": WORKSPACE, "OPIK_PROJECT_NAME": PROJECT}
    )
    yield stand_in
    stand_in.close()


def assert_arrived_through_collector(opik, collector, span_names):
    assert opik.wait_for_spans(len(span_names), timeout=10), opik.trees()
    spans = opik.spans(project=PROJECT, workspace=WORKSPACE)
    assert sorted(s.name for s in spans) == sorted(span_names), opik.trees()
    assert collector.received, "nothing went to the collector"
    for headers in collector.received:
        assert "authorization" not in {name.lower() for name in headers}, headers
        assert KEY not in str(headers)
    span_requests = [r for r in opik.requests if r.path == OTLP_PATH]
    assert span_requests and len(span_requests) == len(collector.forwarded_statuses)
    for request in span_requests:  # spans came only through the collector, authenticated
        assert request.headers["User-Agent"] == COLLECTOR_AGENT and request.status == 200, request
        assert request.project == PROJECT and request.workspace == WORKSPACE
    row_requests = [r for r in opik.requests if r.path == TRACES_PATH]
    assert len(row_requests) == 1, opik.requests  # trace rows went straight to Opik's REST API
    assert row_requests[0].headers["User-Agent"] != COLLECTOR_AGENT and row_requests[0].status == 204
    (row,) = opik.traces(project=PROJECT, workspace=WORKSPACE)
    assert {s.trace_id for s in spans} == {row.id}
    assert opik.orphans() == [], opik.trees()
    assert {r.status for r in opik.requests} <= {200, 204}
    return row, {s.name: s for s in spans}


def test_collector_config_parses_and_names_opiks_endpoint():
    config = load_config()
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert "grpc" not in config["receivers"]["otlp"]["protocols"]
    assert "batch" in config["processors"]
    exporter = config["exporters"]["otlphttp"]
    assert exporter["traces_endpoint"] == "${env:OPIK_URL}/v1/private/otel/v1/traces"
    assert exporter.get("compression", "gzip") == "gzip"
    assert set(exporter["headers"]) == {"Authorization", "Comet-Workspace", "projectName"}
    assert exporter["headers"]["Authorization"] == "${env:OPIK_API_KEY}"  # raw key, no Bearer
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline == {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["otlphttp"]}
    # The endpoint it names is the one Opik (here LocalOpik) ingests at.
    with LocalOpik() as server:
        assert expand(exporter["traces_endpoint"], {"OPIK_URL": server.url}) == server.otlp_traces_endpoint


def test_spans_go_through_the_collector_and_trace_rows_straight_to_opik(opik, collector, tmp_path):
    provider = TracerProvider()
    tracing = configure(
        url=opik.url,
        api_key=KEY,
        workspace=WORKSPACE,
        project_name=PROJECT,
        otlp_endpoint=collector.traces_url,
        tracer_provider=provider,
        spool_directory=tmp_path / "spool",
    )
    try:
        assert KEY not in repr(tracing.exporter)
        tracer = provider.get_tracer("collector-test")
        with tracer.start_as_current_span("handle-order") as root:
            root.set_attribute("input.order_id", "A-1")
            trace_id = get_opik_trace_id()
            with tracer.start_as_current_span("check-stock"):
                with tracer.start_as_current_span("query-db"):
                    pass
        assert tracing.force_flush()
    finally:
        tracing.shutdown()
        provider.shutdown()

    row, spans = assert_arrived_through_collector(opik, collector, ["handle-order", "check-stock", "query-db"])
    assert row.id == trace_id and row.name == "handle-order" and row.input == {"input.order_id": "A-1"}
    assert spans["check-stock"].parent_span_id == spans["handle-order"].id
    assert spans["query-db"].parent_span_id == spans["check-stock"].id


def test_example_app_runs_through_the_collector(opik, collector, tmp_path, isolated_opik_settings):
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPIK_")}
    env.update(
        OPIK_URL_OVERRIDE=opik.url,
        OPIK_API_KEY=KEY,
        OPIK_WORKSPACE=WORKSPACE,
        OPIK_PROJECT_NAME=PROJECT,
        OTEL_COLLECTOR_TRACES_ENDPOINT=collector.traces_url,
        HOME=str(isolated_opik_settings),
        TMPDIR=str(tmp_path),  # the default spool directory lives under the temp dir
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "app.py")], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert KEY not in result.stdout + result.stderr
    printed_id = result.stdout.split("Opik trace id:")[1].split()[0]
    row, spans = assert_arrived_through_collector(opik, collector, ["handle-order", "check-stock", "charge-card"])
    assert row.id == printed_id and row.tags == ["collector-example"]
    assert spans["charge-card"].parent_span_id == spans["handle-order"].id
