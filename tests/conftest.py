"""Shared fixtures: a real OTel SDK pipeline with OpikSpanProcessor, LocalOpik, clean settings and warnings."""

import os

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opik_otel import configure
from opik_otel._logging import reset_rate_limits
from opik_otel.processor import OpikSpanProcessor
from opik_otel.testing import LocalOpik

# Modules whose tests run real services as subprocesses (multi-service chains, the demo,
# opentelemetry-instrument). CI runs them on the default interpreter only; every other
# supported Python runs the rest: `pytest -m "not integration"`.
INTEGRATION_MODULES = frozenset(
    {
        "test_examples",
        "test_lifecycle",
        "test_multi_service",
        "test_otel_first_chain",
        "test_projects",
        "test_readme",
        "test_two_process",
        "test_zero_code",
        "test_zero_code_roots",
    }
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "integration: runs real services as subprocesses (default interpreter in CI)"
    )


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in INTEGRATION_MODULES:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _reset_warning_rate_limits():
    """Every test sees each of the package's warnings afresh."""
    reset_rate_limits()
    yield
    reset_rate_limits()


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    """A real ``TracerProvider`` (never the global one) with OpikSpanProcessor + in-memory export."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(OpikSpanProcessor())
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()


@pytest.fixture
def tracer(provider):
    return provider.get_tracer("tests.opik_otel")


@pytest.fixture
def isolated_opik_settings(monkeypatch, tmp_path):
    """No OPIK_* variable or ~/.opik.config of the developer leaks into a test."""
    for name in list(os.environ):
        if name.startswith("OPIK_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def opik():
    """An embedded LocalOpik on a loopback port chosen by the OS."""
    with LocalOpik() as server:
        yield server


@pytest.fixture
def pipelines(request, tmp_path):
    """Factory of ``configure()``d pipelines on private providers; all shut down afterwards."""
    created = []
    module = request.module.__name__.rsplit(".", 1)[-1]

    def make(name="p", **options):
        provider = TracerProvider()
        options.setdefault("spool_directory", tmp_path / f"spool-{name}-{len(created)}")
        tracing = configure(tracer_provider=provider, **options)
        created.append((provider, tracing))
        return provider.get_tracer(f"tests.{module}.{name}"), tracing

    yield make
    for provider, tracing in created:
        tracing.shutdown()
        provider.shutdown()
