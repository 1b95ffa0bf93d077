"""Property tests: bad input never escapes, and no invalid id is ever written.

Arbitrary header maps, baggage strings, span attribute values and settings go through
the real pipeline (propagators, ``OpikSpanProcessor``, ``OpikExporter``) into
``LocalOpik``. The only exception allowed to reach the caller is ``ConfigurationError``
at setup; whatever reaches Opik carries only canonical UUIDv7 ids.
"""

import os
import uuid
from typing import Any, List

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from opik_otel import ConfigurationError, OpikExporter, OpikSpanProcessor, configure, resolve_config
from opik_otel.attributes import OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID
from opik_otel.ids import uuid_v7_int
from opik_otel.retry import RetryPolicy
from opik_otel.testing import LocalOpik
from helpers import is_canonical_v7

try:
    from opik_otel.propagator import OpikPropagator
except ImportError:  # pragma: no cover - the propagator is optional here
    OpikPropagator = None

ID_KEYS = (OPIK_TRACE_ID, OPIK_SPAN_ID, OPIK_PARENT_SPAN_ID)
PROPERTIES = settings(
    max_examples=int(os.environ.get("OPIK_OTEL_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def opik():
    with LocalOpik() as server:
        yield server


@pytest.fixture(scope="module")
def empty_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "opik.config"
    path.write_text("")
    return str(path)


@pytest.fixture(scope="module", autouse=True)
def no_opik_environment():
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("OPIK_")}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="module")
def exporter(opik, empty_config):
    instance = OpikExporter(
        url=opik.url,
        config_path=empty_config,
        spool_directory=False,  # a refused request must show up as FAILURE here
        retry_policy=RetryPolicy(max_attempts=1),
        timeout=5.0,
    )
    yield instance
    instance.shutdown(500)


@pytest.fixture(scope="module")
def pipeline():
    """A provider with the linkage processor; finished spans land in memory."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(OpikSpanProcessor(mint_root_ids=True))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider.get_tracer("tests.bad_input"), memory
    provider.shutdown()


# ---------------------------------------------------------------------------- helpers




def assert_only_canonical_ids(attributes) -> None:
    for key in ID_KEYS:
        if key in attributes:
            assert is_canonical_v7(attributes[key]), (key, attributes[key])


def export_and_check(exporter: OpikExporter, opik: LocalOpik, spans) -> None:
    """Export ``spans``: all accepted, every written id canonical."""
    opik.clear()  # only this example's data: queries stay cheap
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.force_flush(10_000) is True
    assert all(r.status < 300 for r in opik.requests), [r.error for r in opik.requests]
    stored = {r.otel_span_id: r for r in opik.spans()}
    for span in spans:
        record = stored[format(span.context.span_id, "016x")]  # never dropped
        assert_only_canonical_ids(record.attributes)
        assert is_canonical_v7(record.id) and is_canonical_v7(record.trace_id)
        assert record.parent_span_id is None or is_canonical_v7(record.parent_span_id)
    for row in opik.traces():
        assert is_canonical_v7(row.id)


def finished(memory: InMemorySpanExporter) -> List[Any]:
    spans = list(memory.get_finished_spans())
    memory.clear()
    return spans


def short_text(size: int):
    return st.text(alphabet=st.characters(codec="utf-8"), max_size=size)


v7_ids = st.builds(
    lambda t, r: str(uuid.UUID(int=uuid_v7_int(t, r))),
    st.integers(0, 0xFFFF_FFFF_FFFF),
    st.integers(0, (1 << 74) - 1),
)


@st.composite
def id_spellings(draw) -> str:
    value = draw(st.one_of(v7_ids, st.uuids().map(str), st.text(alphabet=st.characters(codec="utf-8"), max_size=40)))
    style = draw(st.sampled_from(["plain", "upper", "hex", "braces", "urn", "padded", "cut", "percent"]))
    return {
        "plain": value,
        "upper": value.upper(),
        "hex": value.replace("-", ""),
        "braces": "{" + value + "}",
        "urn": "urn:uuid:" + value,
        "padded": " " + value + " ",
        "cut": value[: draw(st.integers(0, max(0, len(value))))],
        "percent": value.replace("-", "%2D"),
    }[style]


@st.composite
def baggage_strings(draw) -> str:
    entries = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.one_of(st.sampled_from([OPIK_TRACE_ID, OPIK_SPAN_ID, "opik.parent_span_id", "user"]), short_text(12)))
        value = draw(st.one_of(id_spellings(), short_text(20)))
        props = draw(st.sampled_from(["", ";p=1", ";", ";;x"]))
        entries.append(f"{key}={value}{props}")
    separator = draw(st.sampled_from([",", " , ", ",,", ";"]))
    return separator.join(entries)


# Text an HTTP header or a setting can carry: any Unicode but lone surrogates (the SDK's
# propagators assume encodable text; attribute values below do get surrogates).
any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
text_with_surrogates = st.text(
    alphabet=st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)), max_size=30
)
primitive_values = st.one_of(
    text_with_surrogates,
    st.integers(),  # unbounded: beyond int64 too
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=20),
    id_spellings(),
)
attribute_values = st.one_of(
    primitive_values,
    st.lists(primitive_values, max_size=4),
    st.lists(st.integers(), max_size=4).map(tuple),
    st.lists(text_with_surrogates, max_size=4),
    st.none(),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
attribute_keys = st.one_of(
    st.sampled_from(
        [
            OPIK_TRACE_ID,
            OPIK_SPAN_ID,
            OPIK_PARENT_SPAN_ID,
            "opik_otel.minted_trace",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.cost",
            "gen_ai.request.model",
            "input.value",
            "output",
            "opik.tags",
            "opik.metadata",
            "opik.metadata.k",
            "thread_id",
            "session.id",
        ]
    ),
    text_with_surrogates,
)


# -------------------------------------------------------------------------- properties


@PROPERTIES
@given(baggage=st.one_of(baggage_strings(), any_text))
def test_baggage_strings_never_raise_and_never_write_an_invalid_id(opik, exporter, pipeline, baggage):
    tracer, memory = pipeline
    context = W3CBaggagePropagator().extract({"baggage": baggage})
    with tracer.start_as_current_span("server", context=context):
        with tracer.start_as_current_span("handler"):
            pass
    spans = finished(memory)
    for span in spans:
        assert_only_canonical_ids(span.attributes)
    export_and_check(exporter, opik, spans)


carrier_keys = st.one_of(
    st.sampled_from(
        ["traceparent", "tracestate", "baggage", "opik_trace_id", "opik_parent_span_id", "Opik-Trace-Id",
         "opik-parent-span-id", "OPIK_TRACE_ID"]
    ),
    short_text(15),
)
# Text only: the OTel getter contract (what WSGI/ASGI frameworks hand over); the SDK's own
# propagators are not ours to harden against other types.
carrier_values = st.one_of(id_spellings(), baggage_strings(), any_text)


@PROPERTIES
@given(carrier=st.dictionaries(carrier_keys, carrier_values, max_size=6))
def test_incoming_header_maps_never_raise_and_never_write_an_invalid_id(opik, exporter, pipeline, carrier):
    tracer, memory = pipeline
    propagators = [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
    if OpikPropagator is not None:
        propagators.append(OpikPropagator())
    context = None
    for propagator in propagators:
        context = propagator.extract(carrier, context=context)
    with tracer.start_as_current_span("server", context=context):
        with tracer.start_as_current_span("handler"):
            pass
    spans = finished(memory)
    for span in spans:
        assert_only_canonical_ids(span.attributes)
    export_and_check(exporter, opik, spans)


@PROPERTIES
@given(attributes=st.dictionaries(attribute_keys, attribute_values, max_size=8), event=st.booleans(), child=st.booleans())
def test_attribute_values_never_raise_never_drop_a_span_never_write_an_invalid_id(opik, exporter, pipeline, attributes, event, child):
    tracer, memory = pipeline
    with tracer.start_as_current_span("root") as span:
        span.set_attributes(attributes)  # the SDK drops what OTel does not allow, with a warning
        if event:
            span.add_event("e", attributes)
        if child:
            with tracer.start_as_current_span("child", attributes=attributes):
                pass
    spans = finished(memory)
    export_and_check(exporter, opik, spans)


token_text = st.text(alphabet="abcXYZ019-_.!#~", min_size=1, max_size=12)
printable_latin1 = st.text(
    alphabet=st.characters(codec="latin-1", categories=["L", "N", "P", "S"]), min_size=1, max_size=12
)
header_names = st.one_of(
    token_text, token_text, st.sampled_from(["X-Team", "Authorization", "projectName", "Host", "Content-Length"]),
    st.text(max_size=12),
)
header_values = st.one_of(
    printable_latin1, printable_latin1, printable_latin1, any_text,
    st.text(alphabet="abc \t\r\n\x00\x7f\xe9", max_size=8), st.integers(), st.none(),
)


@PROPERTIES
@given(headers=st.one_of(st.dictionaries(header_names, header_values, max_size=4), st.none(), st.lists(st.text(), max_size=2)))
def test_header_maps_are_refused_at_setup_or_sent_fine(opik, empty_config, pipeline, headers):
    try:
        exporter = OpikExporter(
            url=opik.url, headers=headers, config_path=empty_config, spool_directory=False,
            retry_policy=RetryPolicy(max_attempts=1),
        )
    except ConfigurationError:
        event("refused at setup")
        return
    event("accepted")
    try:
        for value in (headers or {}).values():
            assert "\r" not in value and "\n" not in value and value.isprintable()
        tracer, memory = pipeline
        tracer.start_span("with-headers").end()
        spans = finished(memory)
        opik.clear()
        assert exporter.export(spans) is SpanExportResult.SUCCESS  # stored
        delivered = exporter.force_flush(10_000)
        statuses = [r.status for r in opik.requests]
        # A user's own Authorization or projectName may be what Opik then refuses;
        # everything else gets through.
        if not {name.lower() for name in headers or {}} & {"authorization"}:
            assert delivered is True, statuses
    finally:
        exporter.shutdown(0)


optional_text = st.one_of(
    st.none(), st.none(), printable_latin1, printable_latin1, any_text,
    st.text(alphabet="ab:/.\r\n\x00 hpst", max_size=25), st.integers(),
)
urls = st.one_of(
    optional_text,
    st.builds(lambda host, path: f"http://{host}{path}", st.sampled_from(["localhost:5173", "127.0.0.1:8080", "h"]),
              st.sampled_from(["/api", "/api/", "", "/opik/api", "/x y"])),
    st.sampled_from(
        ["http://localhost:5173/api", "https://www.comet.com/opik/api", "grpc://x:4317", "http://h:4318/v1/traces",
         "http://h/api/v1/private/otel", "https://www.comet.com/", "ftp://x", "http://", "http://[::1", "http://h:99999/api"]
    ),
)


@PROPERTIES
@given(url=urls, api_key=optional_text, workspace=optional_text, project_name=optional_text)
def test_resolve_config_raises_only_configuration_errors(empty_config, url, api_key, workspace, project_name):
    try:
        config = resolve_config(url, api_key, workspace, project_name, environ={}, config_path=empty_config)
    except ConfigurationError:
        event("refused at setup")
        return
    event("accepted")
    for value in config.headers().values():
        assert "\r" not in value and "\n" not in value


numbers = st.one_of(
    st.integers(-10, 10**9), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4), st.none(), st.booleans()
)
exporter_options = st.fixed_dictionaries(
    {},
    optional={
        "timeout": numbers,
        "max_request_bytes": numbers,
        "spool_max_bytes": numbers,
        "verify": st.one_of(st.booleans(), st.text(max_size=8), st.integers(), st.just(".")),
        "compression": st.one_of(st.sampled_from(["gzip", None, "GZIP", "br", ""]), st.integers()),
        "tags": st.one_of(st.none(), st.text(max_size=5), st.lists(st.one_of(any_text, st.integers()), max_size=3)),
        "metadata": st.one_of(
            st.none(), st.integers(), st.dictionaries(st.one_of(any_text, st.integers()), st.one_of(any_text, st.floats()), max_size=3)
        ),
        "thread_id": st.one_of(st.none(), any_text, st.integers(), st.lists(st.integers(), max_size=1)),
        "otlp_endpoint": st.one_of(st.text(max_size=20), st.sampled_from(["http://127.0.0.1:1/v1/traces", "grpc://x"])),
        "headers": st.one_of(st.none(), st.dictionaries(any_text, any_text, max_size=2)),
        "retry_policy": st.one_of(st.none(), st.just(RetryPolicy(max_attempts=1)), st.text(max_size=3)),
    },
)


@PROPERTIES
@given(options=exporter_options)
def test_exporter_options_raise_only_configuration_errors_and_then_work(opik, empty_config, pipeline, options):
    try:
        exporter = OpikExporter(url=opik.url, config_path=empty_config, spool_directory=False, **options)
    except ConfigurationError:
        event("refused at setup")
        return
    event("accepted")
    try:
        if "otlp_endpoint" in options or "timeout" in options:
            return  # would talk to a host other than LocalOpik, or very slowly
        tracer, memory = pipeline
        tracer.start_span("with-options").end()
        result = exporter.export(finished(memory))
        assert result in (SpanExportResult.SUCCESS, SpanExportResult.FAILURE)
    finally:
        exporter.shutdown(0)


batching_options = st.fixed_dictionaries(
    {},
    optional={
        "max_queue_size": numbers,
        "max_export_batch_size": numbers,
        "schedule_delay_millis": numbers,
        "exit_timeout_millis": numbers,
        "tracer_provider": st.one_of(st.none(), st.integers(), st.text(max_size=3)),
    },
)


@PROPERTIES
@given(options=batching_options)
def test_configure_options_raise_only_configuration_errors(opik, empty_config, tmp_path_factory, options):
    provider = options.pop("tracer_provider", None) or TracerProvider(shutdown_on_exit=False)
    try:
        tracing = configure(
            url=opik.url, config_path=empty_config, tracer_provider=provider,
            spool_directory=tmp_path_factory.mktemp("spool"), **options,
        )
    except ConfigurationError:
        event("refused at setup")
        return
    event("accepted")
    tracing.shutdown(500)


# ------------------------------------------- hostile values around the span (issue 9)


class _Hostile:
    """An attribute value whose str() and repr() raise."""

    def __str__(self):
        raise RuntimeError("no str")

    __repr__ = __str__


def _self_containing_list():
    value: List[Any] = [1]
    value.append(value)
    return value


# What user code or a third-party SpanProcessor can hand the exporter in plain dicts,
# past the SDK's attribute cleaning.
exotic_values = st.one_of(
    attribute_values,
    st.sampled_from([object(), {1, 2}, frozenset({"a"}), _Hostile(), 3 + 4j, bytearray(b"\xff")]),
    st.builds(_self_containing_list),
    st.dictionaries(st.one_of(st.integers(), text_with_surrogates), st.one_of(st.integers(), text_with_surrogates), max_size=3),
    st.recursive(primitive_values, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8),
)
exotic_keys = st.one_of(attribute_keys, st.integers(), st.none(), text_with_surrogates)


class _Errors:
    """Records the OTel encoder's error lines and any traceback the package logs."""

    def __init__(self):
        import logging

        self.records: List[Any] = []
        errors = self

        class Collect(logging.Handler):
            def emit(self, record):
                # The SDK's own warnings about what user code passed it are not ours;
                # the encoder's complaints about what the exporter hands it are.
                if record.name.startswith("opentelemetry.exporter") or record.exc_info:
                    errors.records.append(record)

        self.handler = Collect(logging.DEBUG)
        self.loggers = [logging.getLogger("opentelemetry.exporter"), logging.getLogger("opik_otel")]

    def __enter__(self):
        for logger in self.loggers:
            logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc_info):
        for logger in self.loggers:
            logger.removeHandler(self.handler)


@PROPERTIES
@given(
    link_attributes=st.dictionaries(attribute_keys, attribute_values, max_size=4),
    resource_attributes=st.dictionaries(text_with_surrogates, attribute_values, max_size=4),
    scope_name=text_with_surrogates,
    scope_version=st.one_of(st.none(), text_with_surrogates),
    scope_attributes=st.dictionaries(text_with_surrogates, attribute_values, max_size=3),
    name=text_with_surrogates,
    description=text_with_surrogates,
)
def test_hostile_links_resource_and_scope_are_repaired_without_a_traceback(
    opik, exporter, link_attributes, resource_attributes, scope_name, scope_version, scope_attributes, name, description
):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.trace import Link, Status, StatusCode

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource(resource_attributes), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer(scope_name, scope_version, attributes=scope_attributes)
    with tracer.start_as_current_span("target") as target:
        pass
    with _Errors() as errors:
        with tracer.start_as_current_span(name, links=[Link(target.get_span_context(), link_attributes)]) as span:
            span.set_status(Status(StatusCode.ERROR, description))
            span.add_event(name, link_attributes)
        spans = finished(memory)
        export_and_check(exporter, opik, spans)
    provider.shutdown()
    assert errors.records == [], [r.getMessage() for r in errors.records]
    # Repaired, not dropped: the name and the scope (Opik's metadata.integration) arrive.
    from opik_otel.repairs import repaired_text

    stored = {record.otel_span_id: record for record in opik.spans()}[format(span.context.span_id, "016x")]
    assert stored.name == repaired_text(name)
    if scope_name and scope_name != "logfire":
        assert stored.metadata.get("integration") == repaired_text(scope_name)


@PROPERTIES
@given(
    span_attributes=st.dictionaries(exotic_keys, exotic_values, max_size=4),
    link_attributes=st.dictionaries(exotic_keys, exotic_values, max_size=4),
    resource_attributes=st.dictionaries(exotic_keys, exotic_values, max_size=3),
    name=st.one_of(text_with_surrogates, st.integers(), st.none()),
)
def test_exotic_values_in_plain_spans_are_repaired_without_a_traceback(
    opik, exporter, span_attributes, link_attributes, resource_attributes, name
):
    """A ``ReadableSpan`` built by other code with plain dicts: anything at all."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, SpanContext, TraceFlags

    def context(span_id):
        return SpanContext(0xABC, span_id, is_remote=False, trace_flags=TraceFlags(1))

    resource = Resource({})
    resource._attributes = resource_attributes  # past the SDK's cleaning, as a custom Resource could
    span = ReadableSpan(
        name=name,
        context=context(7),
        attributes=span_attributes,
        events=[Event("e", link_attributes, 1)],
        links=[Link(context(8), link_attributes)],
        resource=resource,
        start_time=1_700_000_000_000_000_000,
        end_time=1_700_000_000_100_000_000,
    )
    with _Errors() as errors:
        export_and_check(exporter, opik, [span])
    assert errors.records == [], [r.getMessage() for r in errors.records]


def test_spans_given_one_opik_span_id_by_user_code_all_reach_opik(opik, exporter, pipeline, caplog):
    """The case the attribute property found (with ``child=True``): user attributes with
    a valid ``opik.span_id`` and an invalid ``opik.trace_id`` on a span and its child."""
    import logging

    tracer, memory = pipeline
    shared = str(uuid.UUID(int=uuid_v7_int(1_700_000_000_000, 12345)))
    attributes = {OPIK_SPAN_ID: shared, OPIK_TRACE_ID: "not-an-id"}
    caplog.set_level(logging.WARNING, logger="opik_otel")
    with tracer.start_as_current_span("root") as span:
        span.set_attributes(attributes)
        with tracer.start_as_current_span("child", attributes=attributes):
            pass
    spans = finished(memory)
    export_and_check(exporter, opik, spans)  # both stored, under distinct ids
    assert len({record.id for record in opik.spans()}) == 2
    assert shared in {record.id for record in opik.spans()}  # the first keeps the user's id
    repeats = [r for r in caplog.records if "repeats the Opik id" in r.getMessage()]
    assert len(repeats) == 1 and shared in repeats[0].getMessage()
    # Exporting the same span again is an upsert, not a duplicate.
    caplog.clear()
    assert exporter.export(spans[-1:]) is SpanExportResult.SUCCESS
    assert not [r for r in caplog.records if "repeats the Opik id" in r.getMessage()]


def test_a_usage_value_of_another_type_is_left_out_not_sent_as_text(empty_config):
    """Found on Python 3.12 by the property above: an object under ``gen_ai.usage.*``
    was repaired into its text, which Opik refuses (not JSON) with the whole request."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, TraceFlags

    span = ReadableSpan(
        name="usage",
        context=SpanContext(0xABC, 9, is_remote=False, trace_flags=TraceFlags(1)),
        attributes={"gen_ai.usage.input_tokens": object(), "gen_ai.usage.output_tokens": 7},
        start_time=1_700_000_000_000_000_000,
        end_time=1_700_000_000_100_000_000,
    )
    with LocalOpik() as own:  # its own server: nothing else arrives while it looks
        exporter = OpikExporter(url=own.url, config_path=empty_config, spool_directory=False)
        try:
            assert exporter.export([span]) is SpanExportResult.SUCCESS
            assert exporter.force_flush(10_000) is True  # accepted, not refused
        finally:
            exporter.shutdown()
        (stored,) = own.spans()
    assert "gen_ai.usage.input_tokens" not in stored.attributes
    assert stored.attributes["gen_ai.usage.output_tokens"] == 7
