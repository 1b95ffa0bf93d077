"""Shared fixtures: a real OTel SDK pipeline with OpikSpanProcessor, and clean warnings."""

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opik_otel._logging import reset_rate_limits
from opik_otel.processor import OpikSpanProcessor


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
