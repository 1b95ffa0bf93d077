"""Zero-code mode: ``opentelemetry-instrument python app.py`` with environment variables only.

Each test runs ``tests/services/zero_code_app.py`` in a real subprocess under
``opentelemetry-instrument``: no opik_otel import and no OTel set-up in the app. The
``opik`` propagator comes from ``OTEL_PROPAGATORS``, ``OpikSpanProcessor`` from
opik_otel's ``opentelemetry_pre_instrument`` hook, whichever configurator (if any) built
the SDK. The app reports what it saw on a ``ZERO_CODE_RESULT`` line.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import ProxyTracerProvider

from helpers import entry_points
from opik_otel import OpikExporter, OpikSpanProcessor, generate_id
from opik_otel.auto import OpikConfigurator, has_opik_span_processor, pre_instrument, register_span_processor
from opik_otel.testing import LocalOpik
from opik_otel.zero_code_exporter import ZeroCodeOpikExporter, opik_exporter_behind

APP = Path(__file__).parent / "services" / "zero_code_app.py"
TRACEPARENT_SPAN_ID = "b7ad6b7169203331"  # the parent span id in the app's traceparent
# What plain opentelemetry-instrumentation does (no distro, no configurator), reproduced
# even where opentelemetry-distro is installed: names that match no entry point.
NO_DISTRO = {
    "OTEL_PYTHON_DISTRO": "opik-test-no-such-distro",
    "OTEL_PYTHON_CONFIGURATOR": "opik-test-no-such-configurator",
}


def _instrument_command():
    beside_python = Path(sys.executable).parent / "opentelemetry-instrument"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("opentelemetry-instrument")


INSTRUMENT = _instrument_command()
needs_instrument = pytest.mark.skipif(
    INSTRUMENT is None, reason="opentelemetry-instrument (opentelemetry-instrumentation) is not installed"
)


def _has_module(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


FAKE_CONFIGURATOR = '''
import sys
from opentelemetry.sdk._configuration import _OTelSDKConfigurator


class FakeConfigurator(_OTelSDKConfigurator):
    """Stands for opentelemetry-distro's (or a vendor's) configurator."""

    def _configure(self, **kwargs):
        print("FAKE_CONFIGURATOR_RAN", file=sys.stderr)
        super()._configure(**kwargs)
'''


def fake_distribution(directory: Path) -> Path:
    """A distribution on ``PYTHONPATH`` that registers an ``opentelemetry_configurator``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fake_otel_distro.py").write_text(FAKE_CONFIGURATOR)
    info = directory / "fake_otel_distro-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-otel-distro\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[opentelemetry_configurator]\nfake = fake_otel_distro:FakeConfigurator\n")
    return directory


def base_env(tmp_path, **overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPIK_"))}
    env.pop("PYTHONPATH", None)
    config = tmp_path / "opik.config"
    config.write_text("")
    env.update(
        {
            "OTEL_PROPAGATORS": "tracecontext,baggage,opik",
            "OTEL_TRACES_EXPORTER": "console",
            # opentelemetry-distro defaults these to OTLP/gRPC; Opik ingests traces only.
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "zero-code-app",
            "OPIK_CONFIG_PATH": str(config),
        }
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_app(env, trace_id, parent_span_id):
    completed = subprocess.run(
        [INSTRUMENT, sys.executable, str(APP), trace_id, parent_span_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    lines = [line for line in completed.stdout.splitlines() if line.startswith("ZERO_CODE_RESULT ")]
    assert lines, f"no result line\nstdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    return json.loads(lines[-1].split(" ", 1)[1]), completed.stderr


def assert_linked(result, trace_id, parent_span_id):
    spans = result["spans"]
    server, handler, client = spans["GET /work"], spans["handler"], spans["GET"]
    assert server["kind"] == "SERVER" and client["kind"] == "CLIENT"
    assert server["otel_parent_id"] == TRACEPARENT_SPAN_ID  # tracecontext still works
    assert server["attributes"]["opik.trace_id"] == trace_id
    assert server["attributes"]["opik.parent_span_id"] == parent_span_id
    assert handler["attributes"]["opik.trace_id"] == trace_id
    assert handler["attributes"]["opik.parent_span_id"] == server["attributes"]["opik.span_id"]
    assert client["attributes"]["opik.trace_id"] == trace_id
    assert client["attributes"]["opik.parent_span_id"] == handler["attributes"]["opik.span_id"]
    headers = result["downstream_headers"]
    for name in ("opik_trace_id", "opik-trace-id"):
        assert headers[name] == trace_id
    for name in ("opik_parent_span_id", "opik-parent-span-id"):
        assert headers[name] == client["attributes"]["opik.span_id"]


def assert_registered(result):
    assert result["provider"] == "TracerProvider"
    assert result["processors"].count("OpikSpanProcessor") == 1
    assert "BatchSpanProcessor" in result["processors"]  # the console exporter's
    assert "OpikPropagator(hyphenated=True, baggage=False)" in result["propagators"]


# --- subprocess runs -----------------------------------------------------------------------


@needs_instrument
def test_without_any_configurator_opik_otel_configures_the_sdk(tmp_path):
    """Plain opentelemetry-instrumentation, no distro: no configurator runs at all."""
    env = base_env(tmp_path, **NO_DISTRO)
    trace_id, parent = generate_id(), generate_id()
    result, _ = run_app(env, trace_id, parent)
    assert_registered(result)
    assert_linked(result, trace_id, parent)


@needs_instrument
def test_with_a_distro_configurator_the_processor_is_added_to_its_provider(tmp_path):
    """A configurator (here a stand-in for opentelemetry-distro's) builds the SDK."""
    distribution = fake_distribution(tmp_path / "site")
    env = base_env(tmp_path, **NO_DISTRO, PYTHONPATH=str(distribution))
    env["OTEL_PYTHON_CONFIGURATOR"] = "fake"
    trace_id, parent = generate_id(), generate_id()
    result, stderr = run_app(env, trace_id, parent)
    assert "FAKE_CONFIGURATOR_RAN" in stderr
    assert_registered(result)
    assert_linked(result, trace_id, parent)


@needs_instrument
@pytest.mark.skipif(not _has_module("opentelemetry.distro"), reason="opentelemetry-distro is not installed")
def test_with_the_real_opentelemetry_distro(tmp_path):
    env = base_env(tmp_path)
    trace_id, parent = generate_id(), generate_id()
    result, _ = run_app(env, trace_id, parent)
    assert_registered(result)
    assert_linked(result, trace_id, parent)


@needs_instrument
def test_without_configurator_or_exporter_setting_the_sdk_is_left_to_the_app(tmp_path):
    env = base_env(tmp_path, **NO_DISTRO, OTEL_TRACES_EXPORTER=None)
    result, stderr = run_app(env, generate_id(), generate_id())
    assert result["provider"] == "ProxyTracerProvider"
    assert result["spans"] == {}
    assert "Traceback" not in stderr


@needs_instrument
@pytest.mark.skipif(
    not entry_points(group="opentelemetry_traces_exporter", name="opik"),
    reason="the opik trace exporter entry point is not installed",
)
def test_end_to_end_into_local_opik(tmp_path):
    """``OTEL_TRACES_EXPORTER=opik``: the spans land under the upstream span, no orphans."""
    project = "zero-code"
    trace_id, parent = generate_id(), generate_id()
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    with LocalOpik() as opik:
        # The upstream service (normally the Opik SDK) owns the trace row and its span.
        response = requests.post(
            f"{opik.url}/v1/private/traces/batch",
            json={"traces": [{"id": trace_id, "project_name": project, "name": "upstream", "start_time": now}]},
            timeout=10,
        )
        response.raise_for_status()
        response = requests.post(
            f"{opik.url}/v1/private/spans/batch",
            json={
                "spans": [
                    {
                        "id": parent,
                        "trace_id": trace_id,
                        "project_name": project,
                        "name": "upstream call",
                        "type": "general",
                        "start_time": now,
                    }
                ]
            },
            timeout=10,
        )
        response.raise_for_status()
        env = base_env(
            tmp_path,
            OTEL_TRACES_EXPORTER="opik",
            OPIK_URL_OVERRIDE=opik.url,
            OPIK_PROJECT_NAME=project,
        )
        result, _ = run_app(env, trace_id, parent)
        assert_linked(result, trace_id, parent)
        assert opik.wait_for_spans(4, project=project), opik.trees()
        spans = {span.name: span for span in opik.spans(project=project)}
        assert {s.trace_id for s in spans.values()} == {trace_id}, opik.trees()
        assert spans["GET /work"].parent_span_id == parent
        assert spans["handler"].parent_span_id == spans["GET /work"].id
        assert spans["GET"].parent_span_id == spans["handler"].id
        assert opik.orphans(project=project) == [], opik.trees()
        assert len(opik.traces(project=project)) == 1


# --- the hook in-process ---------------------------------------------------------------------


def test_register_span_processor_is_idempotent():
    provider = TracerProvider()
    assert not has_opik_span_processor(provider)
    assert register_span_processor(provider)
    assert register_span_processor(provider)
    processors = provider._active_span_processor._span_processors
    assert [type(p) for p in processors].count(OpikSpanProcessor) == 1


def test_register_span_processor_keeps_an_existing_one():
    provider = TracerProvider()
    existing = OpikSpanProcessor()
    provider.add_span_processor(existing)
    assert register_span_processor(provider)
    assert provider._active_span_processor._span_processors == (existing,)


def test_register_span_processor_needs_an_sdk_provider():
    assert register_span_processor(ProxyTracerProvider()) is False
    assert register_span_processor(object()) is False


def test_pre_instrument_leaves_an_unconfigured_app_alone(monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.setattr("opik_otel.auto.trace.get_tracer_provider", ProxyTracerProvider)
    configured = []
    monkeypatch.setattr(OpikConfigurator, "_configure", lambda self, **kw: configured.append(kw))
    pre_instrument()
    assert configured == []


def test_pre_instrument_configures_the_sdk_when_asked_and_nothing_else_did(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setattr("opik_otel.auto.trace.get_tracer_provider", ProxyTracerProvider)
    configured = []
    monkeypatch.setattr(OpikConfigurator, "_configure", lambda self, **kw: configured.append(kw))
    pre_instrument()
    assert len(configured) == 1


def test_pre_instrument_adds_the_processor_to_a_configured_provider(monkeypatch):
    provider = TracerProvider()
    monkeypatch.setattr("opik_otel.auto.trace.get_tracer_provider", lambda: provider)
    pre_instrument()
    assert has_opik_span_processor(provider)


def assert_actionable_no_api_key_line(line):
    assert line.startswith("Spans are not exported to Opik: No Opik API key is configured")
    assert "OPIK_URL_OVERRIDE" in line and "OPIK_API_KEY" in line


@needs_instrument
@pytest.mark.parametrize("configurator", ["none", "fake distro", "opentelemetry-distro"])
def test_without_an_opik_api_key_the_app_is_still_instrumented(tmp_path, configurator):
    """The SDK's configurator builds the exporter of OTEL_TRACES_EXPORTER itself; an
    exception there would leave every library uninstrumented and every exporter off."""
    if configurator == "opentelemetry-distro" and not _has_module("opentelemetry.distro"):
        pytest.skip("opentelemetry-distro is not installed")
    env = base_env(tmp_path, OTEL_TRACES_EXPORTER="opik,console")
    if configurator == "none":
        env.update(NO_DISTRO)
    elif configurator == "fake distro":
        env.update(NO_DISTRO, PYTHONPATH=str(fake_distribution(tmp_path / "site")), OTEL_PYTHON_CONFIGURATOR="fake")
    trace_id, parent = generate_id(), generate_id()
    result, stderr = run_app(env, trace_id, parent)
    # Besides the notices of opentelemetry-instrument and of the stand-in distro, one line.
    notices = ("FAKE_CONFIGURATOR_RAN", "Configuration of configurator not loaded")
    (line,) = [line for line in stderr.splitlines() if not line.startswith(notices)]
    assert_actionable_no_api_key_line(line)
    assert_registered(result)
    assert_linked(result, trace_id, parent)


def test_pre_instrument_never_raises(monkeypatch, caplog):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr("opik_otel.auto.trace.get_tracer_provider", broken)
    pre_instrument()
    assert any("Could not set up OpenTelemetry for Opik" in r.getMessage() for r in caplog.records)


def test_pre_instrument_entry_point():
    (entry_point,) = entry_points(group="opentelemetry_pre_instrument", name="opik")
    assert entry_point.load() is pre_instrument


def test_pre_instrument_registers_the_processor_even_when_an_exporter_fails(monkeypatch, caplog):
    """The SDK set the provider, then an exporter failed: linkage must still work."""
    provider = TracerProvider()
    current = [ProxyTracerProvider()]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "opik")
    monkeypatch.setattr("opik_otel.auto.trace.get_tracer_provider", lambda: current[0])

    def failing_configure(self, **kwargs):
        current[0] = provider
        raise RuntimeError("exporter could not start")

    monkeypatch.setattr(OpikConfigurator, "_configure", failing_configure)
    pre_instrument()
    assert has_opik_span_processor(provider)
    assert any("Could not configure the OpenTelemetry SDK" in r.getMessage() for r in caplog.records)


def test_the_traces_exporter_entry_point_is_the_zero_code_exporter():
    (entry_point,) = entry_points(group="opentelemetry_traces_exporter", name="opik")
    assert entry_point.load() is ZeroCodeOpikExporter


@pytest.mark.usefixtures("isolated_opik_settings")
def test_zero_code_exporter_without_usable_settings_warns_once_and_exports_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        exporter = ZeroCodeOpikExporter()  # Opik Cloud by default, and no API key
    (record,) = caplog.records
    assert_actionable_no_api_key_line(record.getMessage())
    assert record.exc_info is None
    assert exporter.opik_exporter is None
    assert exporter.export([]) is SpanExportResult.FAILURE
    assert exporter.force_flush(100) is False
    exporter.shutdown()
    assert opik_exporter_behind(exporter) is None


@pytest.mark.usefixtures("isolated_opik_settings")
def test_zero_code_exporter_with_usable_settings_is_an_opik_exporter(tmp_path):
    with LocalOpik() as opik:
        exporter = ZeroCodeOpikExporter(url=opik.url, spool_directory=tmp_path / "queue")
        inner = opik_exporter_behind(exporter)
        assert isinstance(inner, OpikExporter) and inner is exporter.opik_exporter
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(OpikSpanProcessor(exporter=inner))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.get_tracer("zero-code").start_span("root").end()
        assert exporter.force_flush(10_000) is True
        assert [span.name for span in opik.spans()] == ["root"]
        exporter.shutdown()
