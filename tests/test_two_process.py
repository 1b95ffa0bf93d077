"""Two processes over loopback HTTP: the client's Opik subtree continues in the server."""

import json
import os
import queue
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import requests
from helpers import is_canonical_v7

SERVICES = Path(__file__).parent / "services"
TIMEOUT = 30




@pytest.fixture
def server(tmp_path):
    """Start the server subprocess; yield (base URL, path of its spans file)."""
    spans_path = tmp_path / "server_spans.json"
    stderr_path = tmp_path / "server_stderr.txt"
    stderr = open(stderr_path, "w")
    process = subprocess.Popen(
        [sys.executable, str(SERVICES / "linked_server.py"), str(spans_path)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=dict(os.environ),
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    port = None
    try:
        try:
            line = lines.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"the server did not report its port in time\n{stderr_path.read_text()}")
        if not line.startswith("PORT "):
            pytest.fail(f"server failed to start: {line!r}\n{stderr_path.read_text()}")
        port = int(line.split()[1])
        yield f"http://127.0.0.1:{port}", spans_path
    finally:
        try:
            if port is not None and process.poll() is None:
                try:
                    requests.get(f"http://127.0.0.1:{port}/shutdown", timeout=5)
                except requests.RequestException:
                    pass
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
            process.stdout.close()
            stderr.close()


def run_client(url, tmp_path, *extra_args):
    spans_path = tmp_path / "client_spans.json"
    result = subprocess.run(
        [sys.executable, str(SERVICES / "linked_client.py"), url, str(spans_path), *extra_args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(spans_path.read_text())


def spans_by_name(spans):
    named = {span["name"]: span["attributes"] for span in spans}
    assert len(named) == len(spans)
    return named


@pytest.mark.parametrize("spelling", ["underscore", "hyphenated"])
def test_client_subtree_continues_in_the_server(server, tmp_path, spelling):
    url, server_spans_path = server
    client = run_client(f"{url}/work", tmp_path, *(["--hyphenated"] if spelling == "hyphenated" else []))
    expected_names = {"opik-trace-id", "opik-parent-span-id"} if spelling == "hyphenated" else {
        "opik_trace_id",
        "opik_parent_span_id",
    }
    assert set(client["sent_headers"]) == expected_names

    client_spans = spans_by_name(client["spans"])
    server_spans = spans_by_name(json.loads(server_spans_path.read_text()))
    assert set(client_spans) == {"client.root", "client.call"}
    assert set(server_spans) == {"server.request", "server.child", "server.grandchild"}

    root, call = client_spans["client.root"], client_spans["client.call"]
    request, child, grandchild = (server_spans[n] for n in ("server.request", "server.child", "server.grandchild"))
    everything = [root, call, request, child, grandchild]

    # One Opik trace across both processes; every id canonical and distinct.
    trace_id = root["opik.trace_id"]
    assert is_canonical_v7(trace_id)
    assert all(span["opik.trace_id"] == trace_id for span in everything)
    span_ids = [span["opik.span_id"] for span in everything]
    assert all(is_canonical_v7(span_id) for span_id in span_ids)
    assert len(set(span_ids)) == len(span_ids)

    # The chain: root (top-level) -> call -> [process boundary] -> request -> child -> grandchild.
    assert "opik.parent_span_id" not in root
    assert call["opik.parent_span_id"] == root["opik.span_id"]
    assert request["opik.parent_span_id"] == call["opik.span_id"]
    assert child["opik.parent_span_id"] == request["opik.span_id"]
    assert grandchild["opik.parent_span_id"] == child["opik.span_id"]


def test_request_with_an_invalid_trace_id_stays_outside_opik(server):
    url, server_spans_path = server
    response = requests.get(f"{url}/work", headers={"opik_trace_id": str(uuid.uuid4())}, timeout=10)
    assert response.json() == {"attached": False}
    server_spans = spans_by_name(json.loads(server_spans_path.read_text()))
    for attributes in server_spans.values():
        assert not any(key.startswith("opik.") for key in attributes)
