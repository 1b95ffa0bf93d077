"""An OTel-first client → server chain in two real processes, ending in one Opik trace.

The client (``tests/services/otel_first_client.py``) starts its trace with plain OTel
under ``configure()`` and sends ``get_distributed_trace_headers()``. The server is either
another ``configure()`` service using ``attach_to_parent`` or a service using the real
Opik SDK's ``@track(opik_distributed_trace_headers=...)``. Everything is exported to one
``LocalOpik`` started here.
"""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from opik_otel.attributes import MINTED_TRACE

from helpers import app_env, running_service

SERVICES = Path(__file__).parent / "services"
PROJECT = "otel-first-chain"
TRACES_PATH = "/api/v1/private/traces/batch"


@pytest.fixture
def start_server(opik, tmp_path):
    with contextlib.ExitStack() as services:

        def start(script):
            return services.enter_context(
                running_service(SERVICES / script, app_env(opik, tmp_path, "server", project=PROJECT))
            )

        yield start


def run_client(opik, tmp_path, server_url):
    result = subprocess.run(
        [sys.executable, str(SERVICES / "otel_first_client.py"), server_url],
        env=app_env(opik, tmp_path, "client", project=PROJECT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def spans_by_name(opik, expected):
    assert opik.wait_for_spans(len(expected), timeout=15), opik.trees()
    spans = {s.name: s for s in opik.spans()}
    assert sorted(spans) == sorted(expected), opik.trees()
    assert len(opik.spans()) == len(expected), opik.trees()
    return spans


def test_otel_first_client_and_otel_server_make_one_trace(opik, tmp_path, start_server):
    server_url = start_server("otel_first_server.py")
    report = run_client(opik, tmp_path, server_url)
    trace_id = report["trace_id"]
    assert report["flushed"] is True
    assert report["server"] == {"attached": True, "trace_id": trace_id}

    spans = spans_by_name(opik, ["client-job", "call-server", "server-handle", "server-step", "server-leaf"])
    tree = opik.tree(trace_id)
    assert {s.trace_id for s in spans.values()} == {trace_id}, tree
    assert spans["client-job"].parent_span_id is None, tree
    assert spans["call-server"].parent_span_id == spans["client-job"].id, tree
    assert spans["server-handle"].parent_span_id == spans["call-server"].id, tree
    assert spans["server-step"].parent_span_id == spans["server-handle"].id, tree
    assert spans["server-leaf"].parent_span_id == spans["server-step"].id, tree
    assert report["headers"] == {
        "opik_trace_id": trace_id, "opik_parent_span_id": spans["call-server"].id, "opik_project_name": PROJECT
    }
    # Both services ran in one OTel trace too (traceparent), yet Opik ids come from the headers.
    assert len({s.otel_trace_id for s in spans.values()}) == 1

    (row,) = opik.traces()
    assert row.id == trace_id and row.name == "client-job" and row.project_name == PROJECT
    assert row.input == {"input.question": "how many orders shipped?"}
    assert opik.stats["traces_written"] == 1  # only the client wrote a row; the server none
    assert [r.path for r in opik.requests].count(TRACES_PATH) == 1
    assert opik.orphans() == [], tree
    for span in spans.values():
        assert MINTED_TRACE not in span.attributes and MINTED_TRACE not in span.input


def test_otel_first_client_and_opik_sdk_server_make_one_trace(opik, tmp_path, start_server):
    pytest.importorskip("opik")
    server_url = start_server("otel_first_opik_sdk_server.py")
    report = run_client(opik, tmp_path, server_url)
    trace_id = report["trace_id"]
    # The SDK reads the two id headers; the project header is for opik_otel callees.
    sent = {k: v for k, v in report["headers"].items() if k != "opik_project_name"}
    assert report["server"]["received"] == sent

    spans = spans_by_name(opik, ["client-job", "call-server", "sdk-handle", "sdk-lookup"])
    tree = opik.tree(trace_id)
    assert {s.trace_id for s in spans.values()} == {trace_id}, tree
    assert spans["sdk-handle"].source == "rest"  # written by the Opik SDK (spans/batch)
    assert spans["call-server"].source == "otel"
    assert spans["sdk-handle"].parent_span_id == spans["call-server"].id, tree
    assert spans["sdk-lookup"].parent_span_id == spans["sdk-handle"].id, tree
    assert spans["call-server"].parent_span_id == spans["client-job"].id, tree
    assert {s.project_name for s in spans.values()} == {PROJECT}

    (row,) = opik.traces()
    assert row.id == trace_id and row.name == "client-job"
    assert opik.stats["traces_written"] == 1  # the SDK consumer writes no trace row
    assert opik.orphans() == [], tree
