"""OpikSpanProcessor on a real TracerProvider: where each span's Opik linkage comes from."""

import asyncio
import logging
import os
import random
import subprocess
import sys
import threading
import uuid

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.context import Context
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY

from opik_otel import (
    OPIK_PARENT_SPAN_ID,
    OPIK_SPAN_ID,
    OPIK_TRACE_ID,
    OpikSpanProcessor,
    attach_to_parent,
    generate_id,
)
from opik_otel import linkage, processor
from opik_otel.processor import set_linkage_attributes

TRACE = "0192f5e0-7b3c-7d4e-8f5a-1b2c3d4e5f6a"
PARENT = "0192f5e0-7b3d-7aaa-9bbb-cccccccccccc"
OPIK_KEYS = (OPIK_TRACE_ID, OPIK_SPAN_ID, OPIK_PARENT_SPAN_ID)


def assert_canonical_v7(value):
    assert isinstance(value, str)
    assert uuid.UUID(value).version == 7
    assert str(uuid.UUID(value)) == value


def opik_attributes(span):
    return {k: v for k, v in span.attributes.items() if k.startswith("opik")}


def by_name(exporter):
    return {span.name: span for span in exporter.get_finished_spans()}


def assert_child_of(child, parent, trace_id):
    assert child.attributes[OPIK_TRACE_ID] == trace_id
    assert child.attributes[OPIK_PARENT_SPAN_ID] == parent.attributes[OPIK_SPAN_ID]
    assert_canonical_v7(child.attributes[OPIK_SPAN_ID])
    assert child.attributes[OPIK_SPAN_ID] != parent.attributes[OPIK_SPAN_ID]


def baggage_context(trace_id=None, span_id=None, base=None):
    ctx = base
    if trace_id is not None:
        ctx = baggage.set_baggage(OPIK_TRACE_ID, trace_id, ctx)
    if span_id is not None:
        ctx = baggage.set_baggage(OPIK_SPAN_ID, span_id, ctx)
    return ctx if ctx is not None else context.get_current()


def remote_parent_context(base=None):
    span_context = SpanContext(
        trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), base)


@pytest.fixture
def linkage_warnings(caplog):
    caplog.set_level(logging.WARNING)

    def records(logger=linkage.LOGGER):
        return [r for r in caplog.records if r.name == logger.name and r.levelno >= logging.WARNING]

    return records


# --- inheritance from the parent span ------------------------------------------------------


def test_three_level_chain_under_an_attached_boundary(tracer, exporter):
    with tracer.start_as_current_span("boundary") as boundary:
        assert attach_to_parent(boundary, {"opik_trace_id": TRACE, "opik_parent_span_id": PARENT})
        with tracer.start_as_current_span("child"):
            with tracer.start_as_current_span("grandchild"):
                with tracer.start_as_current_span("great-grandchild"):
                    pass
    spans = by_name(exporter)
    assert spans["boundary"].attributes[OPIK_PARENT_SPAN_ID] == PARENT
    assert_child_of(spans["child"], spans["boundary"], TRACE)
    assert_child_of(spans["grandchild"], spans["child"], TRACE)
    assert_child_of(spans["great-grandchild"], spans["grandchild"], TRACE)
    assert len({s.attributes[OPIK_SPAN_ID] for s in spans.values()}) == 4


def test_siblings_share_the_parent_and_get_distinct_ids(tracer, exporter):
    with tracer.start_as_current_span("boundary") as boundary:
        attach_to_parent(boundary, {"opik_trace_id": TRACE})
        for name in ("a", "b", "c"):
            with tracer.start_as_current_span(name):
                pass
    spans = by_name(exporter)
    for name in ("a", "b", "c"):
        assert_child_of(spans[name], spans["boundary"], TRACE)
    assert len({spans[n].attributes[OPIK_SPAN_ID] for n in ("a", "b", "c")}) == 3


def test_explicit_parent_context_is_used_not_the_current_one(tracer, exporter):
    with tracer.start_as_current_span("boundary") as boundary:
        attach_to_parent(boundary, {"opik_trace_id": TRACE})
    other = tracer.start_span("other-boundary")
    attach_to_parent(other, {"opik_trace_id": PARENT})
    with trace.use_span(other, end_on_exit=True):
        child = tracer.start_span("child", context=trace.set_span_in_context(boundary))
        child.end()
    spans = by_name(exporter)
    assert_child_of(spans["child"], spans["boundary"], TRACE)


def test_parent_attributes_in_other_spellings_are_written_canonical(tracer, exporter):
    parent = tracer.start_span(
        "parent", attributes={OPIK_TRACE_ID: TRACE.upper(), OPIK_SPAN_ID: "{" + PARENT + "}"}
    )
    child = tracer.start_span("child", context=trace.set_span_in_context(parent))
    assert child.attributes[OPIK_TRACE_ID] == TRACE
    assert child.attributes[OPIK_PARENT_SPAN_ID] == PARENT
    child.end()
    parent.end()


@pytest.mark.parametrize(
    "parent_attributes, bad_key",
    [
        ({OPIK_TRACE_ID: TRACE}, OPIK_SPAN_ID),
        ({OPIK_SPAN_ID: PARENT}, OPIK_TRACE_ID),
        ({OPIK_TRACE_ID: "not-a-uuid", OPIK_SPAN_ID: PARENT}, OPIK_TRACE_ID),
        ({OPIK_TRACE_ID: TRACE, OPIK_SPAN_ID: str(uuid.uuid4())}, OPIK_SPAN_ID),
        ({OPIK_TRACE_ID: TRACE, OPIK_SPAN_ID: 7}, OPIK_SPAN_ID),
        ({OPIK_TRACE_ID: " " + TRACE, OPIK_SPAN_ID: PARENT}, OPIK_TRACE_ID),
    ],
)
def test_partial_or_invalid_parent_signal_leaves_the_span_standalone(
    tracer, linkage_warnings, parent_attributes, bad_key
):
    parent = tracer.start_span("parent", attributes=parent_attributes)
    # Baggage that would link the span must not be used either.
    ctx = baggage_context(TRACE, PARENT, trace.set_span_in_context(parent))
    child = tracer.start_span("child", context=ctx)
    assert opik_attributes(child) == {}
    records = linkage_warnings()
    assert len(records) == 1
    assert bad_key in records[0].args
    child.end()
    parent.end()


def test_parent_without_opik_attributes_falls_through_to_baggage(tracer):
    parent = tracer.start_span("plain-parent", attributes={"http.method": "GET"})
    ctx = baggage_context(TRACE, PARENT, trace.set_span_in_context(parent))
    child = tracer.start_span("child", context=ctx)
    assert child.attributes[OPIK_TRACE_ID] == TRACE
    assert child.attributes[OPIK_PARENT_SPAN_ID] == PARENT
    child.end()
    parent.end()


# --- inheritance from baggage ----------------------------------------------------------------


def test_baggage_trace_and_span_link_a_server_span_and_its_subtree(tracer, exporter):
    ctx = baggage_context(TRACE, PARENT, remote_parent_context())
    with tracer.start_as_current_span("server", context=ctx):
        with tracer.start_as_current_span("handler"):
            with tracer.start_as_current_span("db"):
                pass
    spans = by_name(exporter)
    assert spans["server"].attributes[OPIK_TRACE_ID] == TRACE
    assert spans["server"].attributes[OPIK_PARENT_SPAN_ID] == PARENT
    assert_canonical_v7(spans["server"].attributes[OPIK_SPAN_ID])
    assert_child_of(spans["handler"], spans["server"], TRACE)
    assert_child_of(spans["db"], spans["handler"], TRACE)


def test_baggage_trace_only_makes_a_top_level_span(tracer, exporter):
    with tracer.start_as_current_span("server", context=baggage_context(TRACE)):
        with tracer.start_as_current_span("handler"):
            pass
    spans = by_name(exporter)
    assert spans["server"].attributes[OPIK_TRACE_ID] == TRACE
    assert OPIK_PARENT_SPAN_ID not in spans["server"].attributes
    assert_canonical_v7(spans["server"].attributes[OPIK_SPAN_ID])
    assert_child_of(spans["handler"], spans["server"], TRACE)


def test_baggage_ids_are_written_canonical(tracer):
    span = tracer.start_span("server", context=baggage_context("urn:uuid:" + TRACE.upper(), PARENT.replace("-", "")))
    assert span.attributes[OPIK_TRACE_ID] == TRACE
    assert span.attributes[OPIK_PARENT_SPAN_ID] == PARENT
    span.end()


def test_baggage_in_the_current_context_is_used(tracer):
    token = context.attach(baggage_context(TRACE, PARENT))
    try:
        span = tracer.start_span("server")
    finally:
        context.detach(token)
    assert span.attributes[OPIK_TRACE_ID] == TRACE
    assert span.attributes[OPIK_PARENT_SPAN_ID] == PARENT
    span.end()


@pytest.mark.parametrize(
    "trace_id, span_id, bad_key",
    [
        (None, PARENT, OPIK_TRACE_ID),
        ("garbage", PARENT, OPIK_TRACE_ID),
        (str(uuid.uuid4()), None, OPIK_TRACE_ID),
        (TRACE, "garbage", OPIK_SPAN_ID),
        (TRACE, "", OPIK_SPAN_ID),
        (TRACE, str(uuid.uuid4()), OPIK_SPAN_ID),
    ],
)
def test_invalid_baggage_leaves_the_span_standalone_with_a_warning(
    tracer, linkage_warnings, trace_id, span_id, bad_key
):
    span = tracer.start_span("server", context=baggage_context(trace_id, span_id))
    assert opik_attributes(span) == {}
    records = linkage_warnings()
    assert len(records) == 1
    assert bad_key in records[0].args
    span.end()


# --- nothing to inherit ----------------------------------------------------------------------


def test_spans_outside_anything_are_untouched(tracer, exporter, linkage_warnings):
    with tracer.start_as_current_span("root", attributes={"k": "v"}):
        with tracer.start_as_current_span("child"):
            pass
    remote = tracer.start_span("remote-child", context=remote_parent_context())
    remote.end()
    unrelated = tracer.start_span("with-baggage", context=baggage.set_baggage("tenant", "acme"))
    unrelated.end()
    spans = by_name(exporter)
    assert dict(spans["root"].attributes) == {"k": "v"}
    for name in ("child", "remote-child", "with-baggage"):
        assert dict(spans[name].attributes) == {}
    assert linkage_warnings() == []


# --- the Opik SDK's @opik.track fallback ------------------------------------------------------


# The SDK's HTTP client trips an httpx deprecation warning when it is created.
sdk_warnings = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def opik_sdk():
    """The real Opik SDK, configured to send (in the background) to a closed local port."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPIK_URL_OVERRIDE", "http://127.0.0.1:9/api")
        patch.setenv("OPIK_PROJECT_NAME", "opik-otel-tests")
        patch.setenv("OPIK_TRACK_DISABLE", "false")
        patch.setenv("OPIK_ENABLE_JSON_LOGGING", "false")
        patch.delenv("OPIK_API_KEY", raising=False)
        opik = pytest.importorskip("opik")
        from opik import opik_context

        yield opik, opik_context


@sdk_warnings
def test_opik_track_span_is_the_parent_of_otel_spans(opik_sdk, tracer, exporter):
    opik, opik_context = opik_sdk

    @opik.track(name="inner")
    def inner():
        data = opik_context.get_current_span_data()
        with tracer.start_as_current_span("otel-in-inner"):
            pass
        return data.trace_id, data.id

    @opik.track(name="outer")
    def outer():
        data = opik_context.get_current_span_data()
        with tracer.start_as_current_span("otel-in-outer"):
            with tracer.start_as_current_span("otel-child"):
                pass
        return (data.trace_id, data.id), inner()

    (trace_id, outer_id), (inner_trace_id, inner_id) = outer()
    assert trace_id == inner_trace_id
    assert_canonical_v7(trace_id)
    spans = by_name(exporter)
    assert spans["otel-in-outer"].attributes[OPIK_TRACE_ID] == trace_id
    assert spans["otel-in-outer"].attributes[OPIK_PARENT_SPAN_ID] == outer_id
    assert_child_of(spans["otel-child"], spans["otel-in-outer"], trace_id)
    # The innermost tracked function is the parent.
    assert spans["otel-in-inner"].attributes[OPIK_TRACE_ID] == trace_id
    assert spans["otel-in-inner"].attributes[OPIK_PARENT_SPAN_ID] == inner_id

    after = tracer.start_span("after-track")
    assert opik_attributes(after) == {}
    after.end()


@sdk_warnings
def test_opik_track_async_function(opik_sdk, tracer, exporter):
    opik, opik_context = opik_sdk

    @opik.track(name="async-outer")
    async def tracked(name):
        data = opik_context.get_current_span_data()
        await asyncio.sleep(0)
        with tracer.start_as_current_span(name):
            await asyncio.sleep(0.001)
        return data.trace_id, data.id

    async def main():
        return await asyncio.gather(*(tracked(f"span-{i}") for i in range(10)))

    results = asyncio.run(main())
    spans = by_name(exporter)
    assert len({trace_id for trace_id, _ in results}) == 10
    for i, (trace_id, span_id) in enumerate(results):
        assert spans[f"span-{i}"].attributes[OPIK_TRACE_ID] == trace_id
        assert spans[f"span-{i}"].attributes[OPIK_PARENT_SPAN_ID] == span_id


@sdk_warnings
def test_otel_linkage_takes_precedence_over_opik_track(opik_sdk, tracer, exporter):
    opik, _ = opik_sdk

    @opik.track(name="outer")
    def outer():
        with tracer.start_as_current_span("boundary") as boundary:
            attach_to_parent(boundary, {"opik_trace_id": TRACE, "opik_parent_span_id": PARENT})
            with tracer.start_as_current_span("child"):
                pass
        with tracer.start_as_current_span("baggage-linked", context=baggage_context(TRACE)):
            pass

    outer()
    spans = by_name(exporter)
    assert_child_of(spans["child"], spans["boundary"], TRACE)
    assert spans["baggage-linked"].attributes[OPIK_TRACE_ID] == TRACE
    assert OPIK_PARENT_SPAN_ID not in spans["baggage-linked"].attributes


@sdk_warnings
@pytest.mark.parametrize(
    "parent_attributes, baggage_entries",
    [
        ({OPIK_TRACE_ID: TRACE}, None),
        ({OPIK_SPAN_ID: PARENT}, None),
        ({OPIK_TRACE_ID: "garbage", OPIK_SPAN_ID: PARENT}, None),
        (None, (TRACE, "garbage")),
        (None, (None, PARENT)),
        (None, ("garbage", None)),
    ],
)
def test_partial_or_invalid_signal_never_falls_back_to_opik_track(
    opik_sdk, tracer, linkage_warnings, parent_attributes, baggage_entries
):
    opik, _ = opik_sdk
    parent = None
    if parent_attributes is not None:
        # Started outside the tracked function, so the processor leaves it as given.
        parent = tracer.start_span("broken-parent", attributes=parent_attributes)

    @opik.track(name="outer")
    def outer():
        ctx = trace.set_span_in_context(parent) if parent is not None else context.get_current()
        if baggage_entries is not None:
            ctx = baggage_context(*baggage_entries, base=ctx)
        span = tracer.start_span("child", context=ctx)
        linked_to_sdk = tracer.start_span("control")
        span.end()
        linked_to_sdk.end()
        return span, linked_to_sdk

    span, control = outer()
    assert opik_attributes(span) == {}
    assert OPIK_TRACE_ID in control.attributes  # the fallback itself is active here
    assert len(linkage_warnings()) == 1
    if parent is not None:
        parent.end()


# --- on_start never raises --------------------------------------------------------------------


class ExplodingSpan:
    @property
    def _attributes(self):
        raise RuntimeError("boom")

    @property
    def attributes(self):
        raise RuntimeError("boom")

    def set_attributes(self, attributes):
        raise RuntimeError("boom")

    def get_span_context(self):
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "span, parent_context",
    [
        (object(), None),
        (None, None),
        (object(), baggage_context(TRACE, PARENT)),
        (None, baggage_context(TRACE, PARENT)),
        (ExplodingSpan(), baggage_context(TRACE, PARENT)),
        ("span", Context({_SPAN_KEY: "weird"})),
        ("span", Context({_SPAN_KEY: ExplodingSpan()})),
        ("span", Context({_SPAN_KEY: 42, _BAGGAGE_KEY: ["opik.trace_id"]})),
        ("span", Context({_BAGGAGE_KEY: ("opik.span_id",)})),
        ("span", Context({_BAGGAGE_KEY: {OPIK_TRACE_ID: object()}})),
        ("span", "not a context"),
        ("span", 17),
        ("span", {_SPAN_KEY: ExplodingSpan()}),
    ],
)
def test_on_start_never_raises_and_keeps_linking(span, parent_context, exporter):
    linker = OpikSpanProcessor()
    assert linker.on_start(span, parent_context) is None
    # The same processor still does its job on the next, ordinary spans.
    provider = TracerProvider()
    provider.add_span_processor(linker)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("after-the-weird-input")
    with tracer.start_as_current_span("boundary") as boundary:
        attach_to_parent(boundary, {"opik_trace_id": TRACE})
        with tracer.start_as_current_span("child"):
            pass
    child = next(s for s in exporter.get_finished_spans() if s.name == "child")
    assert child.attributes[OPIK_TRACE_ID] == TRACE
    assert child.attributes[OPIK_PARENT_SPAN_ID] == boundary.attributes[OPIK_SPAN_ID]


def test_on_start_on_a_broken_span_warns(linkage_warnings):
    OpikSpanProcessor().on_start(ExplodingSpan(), baggage_context(TRACE, PARENT))
    records = linkage_warnings(processor.LOGGER)
    assert len(records) == 1 and records[0].exc_info is not None


def test_provider_keeps_working_after_a_weird_context(tracer, exporter):
    tracer.start_span("weird", context=Context({_SPAN_KEY: ExplodingSpan()})).end()
    with tracer.start_as_current_span("boundary") as boundary:
        attach_to_parent(boundary, {"opik_trace_id": TRACE})
        with tracer.start_as_current_span("child"):
            pass
    spans = by_name(exporter)
    assert_child_of(spans["child"], spans["boundary"], TRACE)


# --- concurrency ------------------------------------------------------------------------------


def check_subtrees(exporter, expected):
    """``expected`` maps a subtree key to (trace id, parent id); spans are named kind/key."""
    spans = by_name(exporter)
    assert len(spans) == 3 * len(expected)
    for key, (trace_id, parent_id) in expected.items():
        boundary, child, grandchild = (spans[f"{kind}/{key}"] for kind in ("b", "c", "g"))
        assert boundary.attributes[OPIK_TRACE_ID] == trace_id
        assert boundary.attributes.get(OPIK_PARENT_SPAN_ID) == parent_id
        assert_child_of(child, boundary, trace_id)
        assert_child_of(grandchild, child, trace_id)
    span_ids = [s.attributes[OPIK_SPAN_ID] for s in spans.values()]
    assert len(set(span_ids)) == len(span_ids)


def test_many_threads_never_cross_link(tracer, exporter):
    threads_count, subtrees_per_thread = 16, 50
    expected = {}
    lock = threading.Lock()
    barrier = threading.Barrier(threads_count)
    errors = []

    def worker(t):
        try:
            barrier.wait(timeout=10)
            for i in range(subtrees_per_thread):
                key = f"{t}.{i}"
                trace_id, parent_id = generate_id(), generate_id()
                with lock:
                    expected[key] = (trace_id, parent_id)
                if i % 2:
                    # Attached boundary.
                    with tracer.start_as_current_span(f"b/{key}") as boundary:
                        attach_to_parent(boundary, {"opik_trace_id": trace_id, "opik_parent_span_id": parent_id})
                        with tracer.start_as_current_span(f"c/{key}"):
                            with tracer.start_as_current_span(f"g/{key}"):
                                pass
                else:
                    # Boundary linked through baggage in the thread's current context.
                    token = context.attach(baggage_context(trace_id, parent_id))
                    try:
                        with tracer.start_as_current_span(f"b/{key}"):
                            with tracer.start_as_current_span(f"c/{key}"):
                                with tracer.start_as_current_span(f"g/{key}"):
                                    pass
                    finally:
                        context.detach(token)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    check_subtrees(exporter, expected)


def test_many_asyncio_tasks_never_cross_link(tracer, exporter):
    expected = {}

    async def subtree(i):
        rng = random.Random(i)
        trace_id, parent_id = generate_id(), generate_id()
        expected[str(i)] = (trace_id, parent_id)
        with tracer.start_as_current_span(f"b/{i}") as boundary:
            await asyncio.sleep(0)
            attach_to_parent(boundary, {"opik_trace_id": trace_id, "opik_parent_span_id": parent_id})
            await asyncio.sleep(rng.random() / 1000)
            with tracer.start_as_current_span(f"c/{i}"):
                await asyncio.sleep(rng.random() / 1000)
                with tracer.start_as_current_span(f"g/{i}"):
                    await asyncio.sleep(0)
                await asyncio.sleep(0)

    async def main():
        await asyncio.wait_for(asyncio.gather(*(subtree(i) for i in range(50))), timeout=20)

    asyncio.run(main())
    check_subtrees(exporter, expected)


# --- import cost and private context keys -----------------------------------------------------


def test_importing_opik_otel_does_not_import_opik():
    code = (
        "import sys, opik_otel\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "provider = TracerProvider()\n"
        "provider.add_span_processor(opik_otel.OpikSpanProcessor())\n"
        "provider.get_tracer('t').start_span('s').end()\n"
        "loaded = sorted(m for m in sys.modules if m == 'opik' or m.startswith('opik.'))\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"


def test_private_context_keys_agree_with_the_public_api(tracer):
    span = tracer.start_span("s")
    ctx = trace.set_span_in_context(span)
    assert ctx.get(_SPAN_KEY) is trace.get_current_span(ctx) is span
    ctx = baggage.set_baggage("a", "1", ctx)
    ctx = baggage.set_baggage(OPIK_TRACE_ID, TRACE, ctx)
    assert dict(ctx.get(_BAGGAGE_KEY)) == dict(baggage.get_all(ctx)) == {"a": "1", OPIK_TRACE_ID: TRACE}
    token = context.attach(ctx)
    try:
        current = context.get_current()
        assert current.get(_SPAN_KEY) is trace.get_current_span() is span
        assert dict(current.get(_BAGGAGE_KEY)) == dict(baggage.get_all())
    finally:
        context.detach(token)
    span.end()


# --- set_linkage_attributes -------------------------------------------------------------------


def bare_tracer(limits=None):
    return TracerProvider(span_limits=limits or SpanLimits()).get_tracer("bare")


def linkage_attributes():
    return {OPIK_TRACE_ID: TRACE, OPIK_SPAN_ID: generate_id(), OPIK_PARENT_SPAN_ID: PARENT}


def record_public_calls(span):
    calls = []
    original = span.set_attributes

    def set_attributes(attributes):
        calls.append(dict(attributes))
        original(attributes)

    span.set_attributes = set_attributes
    return calls


def test_fast_path_matches_set_attributes():
    tracer = bare_tracer()
    attributes = linkage_attributes()
    fast = tracer.start_span("fast", attributes={"k": "v"})
    calls = record_public_calls(fast)
    set_linkage_attributes(fast, attributes)
    assert calls == []  # took the fast path
    public = tracer.start_span("public", attributes={"k": "v"})
    public.set_attributes(attributes)
    assert dict(fast.attributes) == dict(public.attributes)
    assert fast.dropped_attributes == public.dropped_attributes == 0
    fast.end()
    public.end()


def test_fast_path_falls_back_when_the_attribute_limit_is_reached():
    tracer = bare_tracer(SpanLimits(max_span_attributes=3))
    attributes = linkage_attributes()
    span = tracer.start_span("limited", attributes={"a": 1, "b": 2})
    calls = record_public_calls(span)
    set_linkage_attributes(span, attributes)
    assert calls == [attributes]
    twin = tracer.start_span("twin", attributes={"a": 1, "b": 2})
    twin.set_attributes(attributes)
    assert dict(span.attributes) == dict(twin.attributes) == attributes
    assert len(span.attributes) == 3
    assert span.dropped_attributes == twin.dropped_attributes == 2
    span.end()
    twin.end()


def test_fast_path_falls_back_when_values_would_be_truncated():
    tracer = bare_tracer(SpanLimits(max_attribute_length=8))
    attributes = linkage_attributes()
    span = tracer.start_span("short")
    calls = record_public_calls(span)
    set_linkage_attributes(span, attributes)
    assert calls == [attributes]
    assert span.attributes[OPIK_TRACE_ID] == TRACE[:8]
    span.end()


def test_fast_path_falls_back_on_an_ended_span():
    tracer = bare_tracer()
    span = tracer.start_span("ended", attributes={"k": "v"})
    span.end()
    calls = record_public_calls(span)
    set_linkage_attributes(span, linkage_attributes())
    assert len(calls) == 1
    assert dict(span.attributes) == {"k": "v"}


def test_processor_respects_attribute_limits():
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2))
    provider.add_span_processor(OpikSpanProcessor())
    tracer = provider.get_tracer("limited")
    with tracer.start_as_current_span("boundary") as boundary:
        attach_to_parent(boundary, {"opik_trace_id": TRACE})
        child = tracer.start_span("child")
        assert len(child.attributes) == 2
        assert child.dropped_attributes == 1
        assert child.attributes[OPIK_PARENT_SPAN_ID] == boundary.attributes[OPIK_SPAN_ID]
        child.end()
    provider.shutdown()


# --- wired to an OpikExporter: minting, project, root start --------------------------------


def test_exporter_makes_minting_the_default_with_its_project(opik, tmp_path, caplog):
    from opik_otel import OpikExporter
    from opik_otel.attributes import MINTED_TRACE, PROJECT_NAME

    opik_exporter = OpikExporter(opik.url, project_name="wired", spool_directory=tmp_path / "spool")
    recorded = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(OpikSpanProcessor(exporter=opik_exporter))
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    try:
        with provider.get_tracer("t").start_as_current_span("root"):
            with provider.get_tracer("t").start_as_current_span("child"):
                pass
    finally:
        provider.shutdown()
        opik_exporter.shutdown()
    child, root = recorded.get_finished_spans()
    assert root.attributes[MINTED_TRACE] is True
    assert root.attributes[PROJECT_NAME] == child.attributes[PROJECT_NAME] == "wired"
    assert "no exporter=" not in caplog.text


def test_minting_without_an_exporter_warns_once_at_construction(caplog):
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        OpikSpanProcessor(mint_root_ids=True)
        OpikSpanProcessor()
    assert caplog.text.count("no exporter=") == 1
