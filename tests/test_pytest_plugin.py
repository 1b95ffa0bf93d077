"""The ``local_opik`` pytest fixture, loaded through the installed ``pytest11`` entry point
in a real pytest subprocess (the OTel global provider is per process)."""

import subprocess
import sys
import textwrap

from helpers import entry_points

USER_TESTS = '''
import os

from opentelemetry import trace

import opik_otel

# Obtained at import time, before any fixture ran: must still reach each test's LocalOpik.
tracer = trace.get_tracer("app")
URLS = []


def checkout(name):
    with tracer.start_as_current_span(name):
        return opik_otel.get_opik_trace_id()


def test_first(local_opik):
    URLS.append(os.environ["OPIK_URL_OVERRIDE"])
    assert URLS[0] == local_opik.url
    trace_id = checkout("first")
    assert trace.get_tracer_provider().force_flush()
    assert [s.name for s in local_opik.spans()] == ["first"]
    assert [t.id for t in local_opik.traces()] == [trace_id]
    assert not local_opik.orphans()


def test_second_gets_a_fresh_server_and_pipeline(local_opik_tracing):
    opik, tracing = local_opik_tracing
    assert os.environ["OPIK_URL_OVERRIDE"] == opik.url != URLS[0]
    checkout("second")
    assert tracing.force_flush()
    assert [s.name for s in opik.spans()] == ["second"]
    assert not opik.orphans()


def test_everything_is_put_back():
    assert os.environ.get("OPIK_URL_OVERRIDE") == "http://untouched.invalid/api"
    assert os.environ["OPIK_PROJECT_NAME"] == "left-alone"
    provider = trace.get_tracer_provider()
    assert provider._active_span_processor._span_processors == ()
'''


def test_the_entry_point_names_the_plugin_module():
    (entry_point,) = entry_points(group="pytest11", name="opik_otel")
    assert entry_point.value == "opik_otel.testing.pytest_plugin"


def test_local_opik_fixture_records_global_provider_spans_and_resets(tmp_path):
    (tmp_path / "test_user_code.py").write_text(textwrap.dedent(USER_TESTS))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OPIK_URL_OVERRIDE": "http://untouched.invalid/api",
        "OPIK_PROJECT_NAME": "left-alone",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user_code.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
