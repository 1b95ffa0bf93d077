"""OpikPropagator: Opik's distributed-trace headers through OTel's propagation API (issue 4)."""

import logging

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from helpers import entry_points
from opik_otel import OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID, attach_to_parent
from opik_otel import propagator as propagator_module
from opik_otel.linkage import PROPAGATED_LINKAGE_KEY, Linkage
from opik_otel.propagator import OpikBaggagePropagator, OpikPropagator

TRACE = "0192f5e0-7b3c-7d4e-8f5a-1b2c3d4e5f6a"
PARENT = "0192f5e0-7b3d-7aaa-9bbb-cccccccccccc"
OTHER_TRACE = "0192f5e0-7b3e-7000-a000-000000000001"
OTHER_PARENT = "0192f5e0-7b3f-7000-b000-000000000002"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

UNDERSCORE = {"opik_trace_id", "opik_parent_span_id", "opik_project_name"}
HYPHENATED = {"opik-trace-id", "opik-parent-span-id", "opik-project-name"}


def linkage_of(span):
    attributes = span.attributes
    return (
        attributes.get(OPIK_TRACE_ID),
        attributes.get(OPIK_PARENT_SPAN_ID),
        attributes.get(OPIK_SPAN_ID),
    )


def finished(exporter):
    return {span.name: span for span in exporter.get_finished_spans()}


class WSGIGetter(Getter):
    """Reads a WSGI environ the way opentelemetry-instrumentation-wsgi's getter does."""

    def get(self, carrier, key):
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    def keys(self, carrier):
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


class ASGIGetter(Getter):
    """Reads an ASGI scope: header names and values are bytes, names lower-cased."""

    def get(self, carrier, key):
        values = [v.decode("latin-1") for k, v in carrier["headers"] if k.decode("latin-1") == key.lower()]
        return values or None

    def keys(self, carrier):
        return [k.decode("latin-1") for k, _ in carrier["headers"]]


class NoKeysGetter(Getter):
    """A getter that cannot list its carrier's keys (``keys`` is optional in practice)."""

    def get(self, carrier, key):
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier):
        raise NotImplementedError


class ListSetter(Setter):
    """Appends ``(name, value)`` pairs, like gRPC metadata or a raw header list."""

    def set(self, carrier, key, value):
        carrier.append((key, value))


@pytest.fixture
def propagator_warnings(caplog):
    caplog.set_level(logging.WARNING)

    def records():
        return [
            r
            for r in caplog.records
            if r.name.startswith("opik_otel") and r.levelno >= logging.WARNING
        ]

    return records


# --- fields ------------------------------------------------------------------------------


# trace_attributes(propagate=True) values travel in their own header.
ATTRIBUTES = {"opik-trace-attributes"}


def test_fields_default_lists_both_spellings():
    assert OpikPropagator().fields == UNDERSCORE | HYPHENATED | ATTRIBUTES


def test_fields_without_hyphenated_and_with_baggage():
    assert OpikPropagator(hyphenated=False).fields == UNDERSCORE | ATTRIBUTES
    assert OpikPropagator(baggage=True).fields == UNDERSCORE | HYPHENATED | {"baggage"} | ATTRIBUTES
    assert OpikBaggagePropagator().fields == UNDERSCORE | HYPHENATED | {"baggage"} | ATTRIBUTES


def test_fields_returns_a_copy():
    propagator = OpikPropagator()
    propagator.fields.add("x")
    assert "x" not in propagator.fields


# --- inject ------------------------------------------------------------------------------


def test_inject_writes_the_current_spans_linkage_in_both_spellings(tracer):
    with tracer.start_as_current_span("client") as span:
        attach_to_parent(span, {"opik_trace_id": TRACE, "opik_parent_span_id": PARENT})
        carrier = {}
        OpikPropagator().inject(carrier)
    own_id = span.attributes[OPIK_SPAN_ID]
    assert carrier == {
        "opik_trace_id": TRACE,
        "opik-trace-id": TRACE,
        "opik_parent_span_id": own_id,
        "opik-parent-span-id": own_id,
    }


def test_inject_underscores_only_when_not_hyphenated(tracer):
    with tracer.start_as_current_span("client") as span:
        attach_to_parent(span, {"opik_trace_id": TRACE})
        carrier = {}
        OpikPropagator(hyphenated=False).inject(carrier)
    assert carrier == {
        "opik_trace_id": TRACE,
        "opik_parent_span_id": span.attributes[OPIK_SPAN_ID],
    }


def test_inject_uses_the_given_context_not_the_current_one(tracer):
    with tracer.start_as_current_span("linked") as span:
        attach_to_parent(span, {"opik_trace_id": TRACE})
    carrier = {}
    OpikPropagator().inject(carrier, context=trace.set_span_in_context(span))
    assert carrier["opik_trace_id"] == TRACE
    carrier = {}
    OpikPropagator().inject(carrier)  # no current span
    assert carrier == {}


def test_inject_writes_nothing_outside_an_opik_trace(tracer):
    with tracer.start_as_current_span("plain"):
        carrier = {"existing": "1"}
        OpikPropagator().inject(carrier)
    assert carrier == {"existing": "1"}


def test_inject_forwards_extracted_linkage_when_no_local_span_carries_one():
    """A context straight from extract (no local span yet) passes its upstream on."""
    extracted = OpikPropagator().extract({"opik-trace-id": TRACE, "opik-parent-span-id": PARENT})
    carrier = {}
    OpikPropagator(hyphenated=False).inject(carrier, context=extracted)
    assert carrier == {"opik_trace_id": TRACE, "opik_parent_span_id": PARENT}


def test_inject_trace_id_only_when_the_linkage_has_no_parent():
    extracted = OpikPropagator().extract({"opik_trace_id": TRACE})
    carrier = {}
    OpikPropagator().inject(carrier, context=extracted)
    assert carrier == {"opik_trace_id": TRACE, "opik-trace-id": TRACE}


def test_inject_with_a_custom_setter(tracer):
    with tracer.start_as_current_span("client") as span:
        attach_to_parent(span, {"opik_trace_id": TRACE})
        carrier = []
        OpikPropagator().inject(carrier, setter=ListSetter())
    names = [name for name, _ in carrier]
    assert set(names) == {"opik_trace_id", "opik_parent_span_id", "opik-trace-id", "opik-parent-span-id"}


# --- extract: spellings and carriers ------------------------------------------------------


def extracted_linkage(ctx):
    return ctx.get(PROPAGATED_LINKAGE_KEY)


@pytest.mark.parametrize(
    "carrier",
    [
        {"opik_trace_id": TRACE, "opik_parent_span_id": PARENT},
        {"opik-trace-id": TRACE, "opik-parent-span-id": PARENT},
        {"Opik-Trace-Id": TRACE, "OPIK_PARENT_SPAN_ID": PARENT},
        {"HTTP_OPIK_TRACE_ID": TRACE, "HTTP_OPIK_PARENT_SPAN_ID": PARENT},  # raw WSGI environ
        [(b"opik-trace-id", b" " + TRACE.encode() + b" "), (b"opik-parent-span-id", PARENT.encode())],
        {"opik_trace_id": [TRACE], "opik_parent_span_id": (PARENT, OTHER_PARENT)},
        {"opik_trace_id": TRACE.upper(), "opik_parent_span_id": "{" + PARENT + "}"},
    ],
    ids=["underscore", "hyphenated", "mixed-case", "wsgi-environ", "asgi-bytes", "multi-valued", "non-canonical"],
)
def test_extract_with_the_default_getter_reads_every_header_shape(carrier, propagator_warnings):
    ctx = OpikPropagator().extract(carrier, context=context.Context())
    assert extracted_linkage(ctx) == Linkage(TRACE, PARENT)
    assert propagator_warnings() == []


def test_extract_hyphen_only_environ_as_gunicorn_delivers_it():
    environ = {"REQUEST_METHOD": "GET", "HTTP_OPIK_TRACE_ID": TRACE, "HTTP_OPIK_PARENT_SPAN_ID": PARENT}
    ctx = OpikPropagator().extract(environ, getter=WSGIGetter())
    assert extracted_linkage(ctx) == Linkage(TRACE, PARENT)


def test_extract_comma_joined_values_of_both_spellings(propagator_warnings):
    """wsgiref keeps underscores: both spellings land in one comma-joined variable."""
    environ = {"HTTP_OPIK_TRACE_ID": f"{TRACE},{TRACE}", "HTTP_OPIK_PARENT_SPAN_ID": f"{PARENT}, {PARENT}"}
    ctx = OpikPropagator().extract(environ, getter=WSGIGetter())
    assert extracted_linkage(ctx) == Linkage(TRACE, PARENT)
    assert propagator_warnings() == []


def test_extract_from_an_asgi_scope_with_its_getter():
    scope = {"headers": [(b"host", b"x"), (b"opik_trace_id", TRACE.encode()), (b"opik-parent-span-id", PARENT.encode())]}
    ctx = OpikPropagator().extract(scope, getter=ASGIGetter())
    assert extracted_linkage(ctx) == Linkage(TRACE, PARENT)


def test_extract_with_a_getter_that_cannot_list_keys():
    ctx = OpikPropagator().extract({"opik-trace-id": TRACE, "opik-parent-span-id": PARENT}, getter=NoKeysGetter())
    assert extracted_linkage(ctx) == Linkage(TRACE, PARENT)


def test_extract_trace_only_links_at_the_top_of_the_trace():
    ctx = OpikPropagator().extract({"opik_trace_id": TRACE})
    assert extracted_linkage(ctx) == Linkage(TRACE, None)


def test_extract_drops_an_invalid_parent_and_keeps_the_trace(propagator_warnings):
    ctx = OpikPropagator().extract({"opik_trace_id": TRACE, "opik_parent_span_id": "nope"})
    assert extracted_linkage(ctx) == Linkage(TRACE, None)
    assert len(propagator_warnings()) == 1


def test_extract_invalid_trace_id_returns_the_context_unchanged(propagator_warnings):
    base = context.set_value("user-key", "v", context.Context())
    ctx = OpikPropagator().extract({"opik_trace_id": "not-a-uuid"}, context=base)
    assert ctx is base
    assert len(propagator_warnings()) == 1


def test_extract_without_headers_returns_the_context_unchanged():
    base = context.set_value("user-key", "v", context.Context())
    assert OpikPropagator().extract({"other": "x"}, context=base) is base


def test_extract_defaults_to_the_current_context():
    token = context.attach(context.set_value("user-key", "v"))
    try:
        ctx = OpikPropagator().extract({"opik_trace_id": TRACE})
    finally:
        context.detach(token)
    assert ctx.get("user-key") == "v"
    assert extracted_linkage(ctx) == Linkage(TRACE, None)


def test_extract_clears_linkage_left_by_an_earlier_request():
    earlier = OpikPropagator().extract({"opik_trace_id": TRACE, "opik_parent_span_id": PARENT})
    ctx = OpikPropagator().extract({"traceparent": TRACEPARENT}, context=earlier)
    assert extracted_linkage(ctx) is None


def test_extract_replaces_linkage_left_by_an_earlier_request():
    earlier = OpikPropagator().extract({"opik_trace_id": TRACE, "opik_parent_span_id": PARENT})
    ctx = OpikPropagator().extract({"opik-trace-id": OTHER_TRACE}, context=earlier)
    assert extracted_linkage(ctx) == Linkage(OTHER_TRACE, None)


# --- round trips through a real provider ---------------------------------------------------


@pytest.mark.parametrize("hyphenated", [True, False])
def test_round_trip_links_server_span_and_descendants(tracer, exporter, hyphenated):
    upstream = OpikPropagator(hyphenated=hyphenated)
    downstream = OpikPropagator()
    with tracer.start_as_current_span("client") as client:
        attach_to_parent(client, {"opik_trace_id": TRACE, "opik_parent_span_id": PARENT})
        headers = {}
        upstream.inject(headers)
    if hyphenated:  # what gunicorn and nginx leave of it
        headers = {k: v for k, v in headers.items() if "_" not in k}
    ctx = downstream.extract(headers, context=context.Context())
    with tracer.start_as_current_span("server", context=ctx, kind=trace.SpanKind.SERVER):
        with tracer.start_as_current_span("handler"):
            with tracer.start_as_current_span("db"):
                pass
    spans = finished(exporter)
    client_id = spans["client"].attributes[OPIK_SPAN_ID]
    server_trace, server_parent, server_id = linkage_of(spans["server"])
    handler_trace, handler_parent, handler_id = linkage_of(spans["handler"])
    db_trace, db_parent, _ = linkage_of(spans["db"])
    assert server_trace == handler_trace == db_trace == TRACE
    assert server_parent == client_id
    assert handler_parent == server_id
    assert db_parent == handler_id


def test_every_span_started_directly_in_the_extracted_context_is_a_child_of_the_upstream_span(tracer, exporter):
    ctx = OpikPropagator().extract({"opik_trace_id": TRACE, "opik_parent_span_id": PARENT})
    tracer.start_span("first", context=ctx).end()
    tracer.start_span("second", context=ctx).end()
    spans = finished(exporter)
    first, second = linkage_of(spans["first"]), linkage_of(spans["second"])
    assert first[:2] == second[:2] == (TRACE, PARENT)
    assert first[2] != second[2]


def test_composite_round_trip_with_tracecontext_and_a_wsgi_getter(tracer, exporter):
    composite = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), OpikPropagator()])
    environ = {"HTTP_TRACEPARENT": TRACEPARENT, "HTTP_OPIK_TRACE_ID": TRACE, "HTTP_OPIK_PARENT_SPAN_ID": PARENT}
    ctx = composite.extract(environ, getter=WSGIGetter())
    with tracer.start_as_current_span("server", context=ctx) as server:
        pass
    assert format(server.parent.span_id, "016x") == "b7ad6b7169203331"
    assert linkage_of(server)[:2] == (TRACE, PARENT)


def test_parent_span_with_opik_ids_wins_over_extracted_linkage(tracer, exporter):
    ctx = OpikPropagator().extract({"opik_trace_id": TRACE, "opik_parent_span_id": PARENT})
    with tracer.start_as_current_span("local", context=ctx) as local:
        attach_to_parent(local, {"opik_trace_id": OTHER_TRACE, "opik_parent_span_id": OTHER_PARENT})
        with tracer.start_as_current_span("child"):
            pass
    child = linkage_of(finished(exporter)["child"])
    assert child[:2] == (OTHER_TRACE, local.attributes[OPIK_SPAN_ID])


def test_extracted_linkage_wins_over_baggage(tracer, exporter):
    with_baggage = baggage.set_baggage(OPIK_SPAN_ID, OTHER_PARENT, baggage.set_baggage(OPIK_TRACE_ID, OTHER_TRACE))
    ctx = OpikPropagator().extract({"opik_trace_id": TRACE, "opik_parent_span_id": PARENT}, context=with_baggage)
    tracer.start_span("server", context=ctx).end()
    assert linkage_of(finished(exporter)["server"])[:2] == (TRACE, PARENT)


# --- baggage ---------------------------------------------------------------------------------


def test_baggage_off_by_default_leaves_the_users_baggage_untouched(tracer):
    composite = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), OpikPropagator()])
    incoming = {"traceparent": TRACEPARENT, "baggage": "user=alice", "opik_trace_id": TRACE, "opik_parent_span_id": PARENT}
    ctx = composite.extract(incoming)
    assert dict(baggage.get_all(ctx)) == {"user": "alice"}
    token = context.attach(ctx)  # as server instrumentations do
    try:
        with tracer.start_as_current_span("server"):
            outgoing = {}
            composite.inject(outgoing)
    finally:
        context.detach(token)
    assert outgoing["baggage"] == "user=alice"
    assert outgoing["opik_trace_id"] == TRACE


def test_baggage_on_extract_adds_the_linkage_to_the_contexts_baggage():
    ctx = OpikPropagator(baggage=True).extract(
        {"baggage": "user=alice", "opik-trace-id": TRACE, "opik-parent-span-id": PARENT},
        context=W3CBaggagePropagator().extract({"baggage": "user=alice"}),
    )
    assert dict(baggage.get_all(ctx)) == {"user": "alice", OPIK_TRACE_ID: TRACE, OPIK_SPAN_ID: PARENT}
    assert extracted_linkage(ctx) == Linkage(TRACE, PARENT)


def test_baggage_on_extract_without_parent_removes_a_stale_span_entry():
    stale = baggage.set_baggage(OPIK_SPAN_ID, OTHER_PARENT, context.Context())
    ctx = OpikPropagator(baggage=True).extract({"opik_trace_id": TRACE}, context=stale)
    assert dict(baggage.get_all(ctx)) == {OPIK_TRACE_ID: TRACE}


def test_baggage_on_inject_rewrites_the_header_with_the_calling_spans_linkage(tracer):
    """Listed after ``baggage``, its header replaces the forwarded (stale) one, keeping user entries."""
    composite = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), OpikBaggagePropagator()])
    incoming = {"baggage": f"user=alice,{OPIK_TRACE_ID}={TRACE},{OPIK_SPAN_ID}={PARENT}"}
    token = context.attach(composite.extract(incoming))
    try:
        with tracer.start_as_current_span("server"):
            with tracer.start_as_current_span("client") as client:
                outgoing = {}
                composite.inject(outgoing)
    finally:
        context.detach(token)
    received = W3CBaggagePropagator().extract(outgoing, context=context.Context())
    assert dict(baggage.get_all(received)) == {
        "user": "alice",
        OPIK_TRACE_ID: TRACE,
        OPIK_SPAN_ID: client.attributes[OPIK_SPAN_ID],
    }
    assert outgoing["opik_parent_span_id"] == client.attributes[OPIK_SPAN_ID]


def test_baggage_only_upstream_links_the_server_span(tracer, exporter):
    """No Opik headers at all: the baggage path of OpikSpanProcessor still links."""
    composite = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), OpikPropagator()])
    ctx = composite.extract({"traceparent": TRACEPARENT, "baggage": f"{OPIK_TRACE_ID}={TRACE},{OPIK_SPAN_ID}={PARENT}"})
    tracer.start_span("server", context=ctx).end()
    assert linkage_of(finished(exporter)["server"])[:2] == (TRACE, PARENT)


# --- bad inputs never raise -----------------------------------------------------------------


class ExplodingGetter(Getter):
    def get(self, carrier, key):
        raise RuntimeError("boom")

    def keys(self, carrier):
        raise RuntimeError("boom")


class ExplodingSetter(Setter):
    def set(self, carrier, key, value):
        raise RuntimeError("boom")


@pytest.mark.parametrize("carrier", [None, 42, "opik_trace_id", object(), [1, 2, 3], {None: TRACE}, {"opik_trace_id": 7}])
def test_extract_never_raises_on_odd_carriers(carrier):
    base = context.Context()
    assert OpikPropagator().extract(carrier, context=base) is base


def test_extract_with_an_exploding_getter_warns_once(propagator_warnings):
    base = context.Context()
    propagator = OpikPropagator()
    for _ in range(3):
        assert propagator.extract({"opik_trace_id": TRACE}, context=base, getter=ExplodingGetter()) is base
    assert len(propagator_warnings()) == 1


def test_inject_with_an_exploding_setter_warns_once(tracer, propagator_warnings):
    with tracer.start_as_current_span("client") as span:
        attach_to_parent(span, {"opik_trace_id": TRACE})
        for _ in range(3):
            OpikPropagator().inject({}, setter=ExplodingSetter())
    assert len(propagator_warnings()) == 1


def test_inject_into_an_immutable_carrier_warns_instead_of_raising(tracer, caplog):
    caplog.set_level(logging.WARNING)
    with tracer.start_as_current_span("client") as span:
        attach_to_parent(span, {"opik_trace_id": TRACE})
        assert OpikPropagator(baggage=True).inject(()) is None
    assert [r.getMessage() for r in caplog.records if r.name == propagator_module.LOGGER.name] == [
        "Could not write Opik distributed trace headers into a tuple carrier."
    ]


def test_extract_with_a_non_context_context_returns_it_and_warns(caplog):
    caplog.set_level(logging.WARNING)
    not_a_context = object()
    assert OpikPropagator().extract({"opik_trace_id": TRACE}, context=not_a_context) is not_a_context
    assert [r.getMessage() for r in caplog.records if r.name == propagator_module.LOGGER.name] == [
        "Could not store Opik linkage in the context."
    ]


# --- registration -------------------------------------------------------------------------


@pytest.mark.parametrize("name, cls", [("opik", OpikPropagator), ("opik_baggage", OpikBaggagePropagator)])
def test_propagator_entry_points(name, cls):
    (entry_point,) = entry_points(group="opentelemetry_propagator", name=name)
    assert entry_point.load() is cls


def test_module_exports():
    assert propagator_module.OpikPropagator is OpikPropagator
