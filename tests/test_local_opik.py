"""LocalOpik, exercised over real loopback HTTP with requests and the real OTLP exporter."""

import gzip
import http.client
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from opik_otel.ids import generate_id
from opik_otel.testing import (
    LocalOpik,
    derived_uuid_v7,
    map_attributes,
    parse_tags,
    resolve_span_ids,
)

T0 = 1_700_000_000_123_000_000  # ns
MS = 1_000_000
TRACE_HEX = "0af7651916cd43dd8448eb211c80319c"
ROOT_HEX = "b7ad6b7169203331"
CHILD_HEX = "00f067aa0ba902b7"
GRANDCHILD_HEX = "1111111111111111"
PROTOBUF = {"Content-Type": "application/x-protobuf"}


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def providers():
    created = []
    yield created
    for provider in created:
        provider.shutdown()


def make_tracer(providers, endpoint, headers=None, compression=None, scope="my-instrumentation"):
    exporter = OTLPSpanExporter(
        endpoint=endpoint, headers=headers, compression=compression, timeout=5
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    providers.append(provider)
    return provider.get_tracer(scope)


def kv(key, value):
    if isinstance(value, bool):
        wrapped = {"boolValue": value}
    elif isinstance(value, int):
        wrapped = {"intValue": str(value)}
    elif isinstance(value, float):
        wrapped = {"doubleValue": value}
    elif isinstance(value, list):
        wrapped = {"arrayValue": {"values": [kv("", v)["value"] for v in value]}}
    else:
        wrapped = {"stringValue": value}
    return {"key": key, "value": wrapped}


def jspan(name, span_hex, parent_hex="", trace_hex=TRACE_HEX, start=T0, attrs=None, **extra):
    span = {
        "traceId": trace_hex,
        "spanId": span_hex,
        "parentSpanId": parent_hex,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 3 * MS),
        "attributes": [kv(k, v) for k, v in (attrs or {}).items()],
    }
    span.update(extra)
    return span


def otlp_doc(*spans, scope="test-scope"):
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [kv("service.name", "svc")]},
                "scopeSpans": [{"scope": {"name": scope}, "spans": list(spans)}],
            }
        ]
    }


def post_json(opik, doc, headers=None, compress=False, path=None):
    body = json.dumps(doc).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if compress:
        body = gzip.compress(body)
        sent["Content-Encoding"] = "gzip"
    return requests.post(path or opik.otlp_traces_endpoint, data=body, headers=sent, timeout=5)


def v7_timestamp_ms(opik_id):
    return int(opik_id.replace("-", "")[:12], 16)


# ---------------------------------------------------------------------- lifecycle


def test_url_properties_and_fast_stop():
    server = LocalOpik()
    server.start()
    assert server.url == f"http://127.0.0.1:{server.port}/api"
    assert server.otlp_traces_endpoint == server.url + "/v1/private/otel/v1/traces"
    assert server.otlp_endpoint == server.url + "/v1/private/otel"
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 0.5
    with pytest.raises(requests.ConnectionError):
        requests.post(server.otlp_traces_endpoint, data=b"", headers=PROTOBUF, timeout=1)


# ------------------------------------------------------------------------- ingest


def test_protobuf_ingest_with_real_exporter(opik, providers):
    tracer = make_tracer(providers, opik.otlp_traces_endpoint)
    with tracer.start_as_current_span("root") as root:
        with tracer.start_as_current_span("child"):
            pass
    spans = {s.name: s for s in opik.spans()}
    assert set(spans) == {"root", "child"}
    assert spans["child"].parent_span_id == spans["root"].id
    assert spans["child"].trace_id == spans["root"].trace_id
    assert spans["root"].otel_trace_id == format(root.get_span_context().trace_id, "032x")
    assert spans["root"].otel_span_id == format(root.get_span_context().span_id, "016x")
    assert spans["child"].otel_parent_span_id == spans["root"].otel_span_id
    assert uuid.UUID(spans["root"].trace_id).version == 7

    (trace,) = opik.traces()
    assert (trace.id, trace.name, trace.source) == (spans["root"].trace_id, "root", "otel-root")
    assert trace.root_span_id == spans["root"].id
    assert trace.start_time == spans["root"].start_time
    assert all(r.status == 200 and r.content_type == "application/x-protobuf" for r in opik.requests)
    assert opik.stats["spans_accepted"] == 2


def test_success_is_an_empty_200(opik):
    response = requests.post(opik.otlp_traces_endpoint, data=b"", headers=PROTOBUF, timeout=5)
    assert (response.status_code, response.content) == (200, b"")


def test_json_ingest_converts_hex_ids(opik):
    response = post_json(opik, otlp_doc(jspan("root", ROOT_HEX), jspan("child", CHILD_HEX, ROOT_HEX, start=T0 + MS)))
    assert response.status_code == 200
    root, child = opik.spans()
    assert (root.otel_trace_id, root.otel_span_id, child.otel_parent_span_id) == (TRACE_HEX, ROOT_HEX, ROOT_HEX)
    ts = T0 // MS
    assert root.trace_id == derived_uuid_v7(ts, bytes.fromhex(TRACE_HEX))
    assert root.id == derived_uuid_v7(ts, bytes.fromhex(ROOT_HEX))
    assert child.parent_span_id == root.id
    assert root.start_time == "2023-11-14T22:13:20.123000Z"


def test_gzip_json_and_gzip_protobuf(opik, providers):
    assert post_json(opik, otlp_doc(jspan("json-gz", ROOT_HEX)), compress=True).status_code == 200
    tracer = make_tracer(providers, opik.otlp_traces_endpoint, compression=Compression.Gzip)
    with tracer.start_as_current_span("proto-gz"):
        pass
    assert {s.name for s in opik.spans()} == {"json-gz", "proto-gz"}
    assert [r.content_encoding for r in opik.requests] == ["gzip", "gzip"]


def test_project_and_workspace_routing(providers):
    with LocalOpik(workspace="team") as opik:
        tracer = make_tracer(
            providers, opik.otlp_traces_endpoint, headers={"projectName": "proj-a", "Comet-Workspace": "ws1"}
        )
        with tracer.start_as_current_span("a"):
            pass
        # HTTP header names are case-insensitive.
        post_json(opik, otlp_doc(jspan("b", ROOT_HEX)), headers={"projectname": "proj-b", "comet-workspace": "ws2"})
        post_json(opik, otlp_doc(jspan("c", CHILD_HEX, trace_hex="ab" * 16)))
        assert opik.projects() == ["proj-a", "proj-b", "Default Project"]
        assert opik.projects(workspace="ws2") == ["proj-b"]
        assert [t.name for t in opik.traces(project="proj-a")] == ["a"]
        assert [(t.name, t.workspace) for t in opik.traces(workspace="ws2")] == [("b", "ws2")]
        (default,) = opik.spans(project="Default Project")
        assert (default.name, default.workspace) == ("c", "team")
        assert opik.requests[1].project == "proj-b"


# ---------------------------------------------------------------------- derived ids


def test_derived_uuid_v7_is_deterministic_and_well_formed():
    a = derived_uuid_v7(1_700_000_000_123, bytes.fromhex(TRACE_HEX))
    assert a == derived_uuid_v7(1_700_000_000_123, bytes.fromhex(TRACE_HEX))
    parsed = uuid.UUID(a)
    assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, a)
    assert v7_timestamp_ms(a) == 1_700_000_000_123
    assert derived_uuid_v7(1_700_000_000_123, bytes.fromhex(ROOT_HEX)) != a
    assert derived_uuid_v7(1_700_000_000_124, bytes.fromhex(TRACE_HEX))[14:] == a[14:]


def test_derived_ids_stable_across_batches_and_servers(opik):
    # The child arrives first, so its start time fixes the trace's timestamp.
    late_child = otlp_doc(jspan("child", CHILD_HEX, ROOT_HEX, start=T0 + 5 * MS))
    post_json(opik, late_child)
    post_json(opik, otlp_doc(jspan("root", ROOT_HEX, start=T0)))
    child, root = sorted(opik.spans(), key=lambda s: s.name)
    ts = (T0 + 5 * MS) // MS
    assert child.trace_id == root.trace_id == derived_uuid_v7(ts, bytes.fromhex(TRACE_HEX))
    assert root.id == child.parent_span_id == derived_uuid_v7(ts, bytes.fromhex(ROOT_HEX))
    assert opik.trace(root.trace_id).name == "root"
    assert opik.orphans() == []

    with LocalOpik() as other:
        post_json(other, late_child)
        (again,) = other.spans()
        assert (again.id, again.trace_id, again.parent_span_id) == (child.id, child.trace_id, child.parent_span_id)


def test_trace_id_ttl_splits_late_batches():
    with LocalOpik(trace_id_ttl_seconds=0.05) as opik:
        post_json(opik, otlp_doc(jspan("child", CHILD_HEX, ROOT_HEX, start=T0 + 5 * MS)))
        time.sleep(0.15)
        post_json(opik, otlp_doc(jspan("root", ROOT_HEX, start=T0)))
        child, root = sorted(opik.spans(), key=lambda s: s.name)
        assert child.trace_id != root.trace_id
        assert v7_timestamp_ms(root.trace_id) == T0 // MS
        assert [o.name for o in opik.orphans()] == ["child"]


def test_ttl_is_refreshed_on_use():
    with LocalOpik(trace_id_ttl_seconds=0.3) as opik:
        for i in range(4):
            post_json(opik, otlp_doc(jspan(f"s{i}", f"{i + 1:016x}", ROOT_HEX, start=T0 + i * MS)))
            time.sleep(0.1)
        assert len({s.trace_id for s in opik.spans()}) == 1


# ---------------------------------------------------------------- explicit opik ids


def test_explicit_trace_parent_and_span_ids(opik):
    trace_id, upstream, bridged = generate_id(), generate_id(), generate_id()
    post_json(
        opik,
        otlp_doc(
            # The OTel parent is ignored once opik.trace_id is present.
            jspan("bridge", ROOT_HEX, "ff" * 8, attrs={
                "opik.trace_id": trace_id, "opik.parent_span_id": upstream, "opik.span_id": bridged}),
            jspan("inner", CHILD_HEX, ROOT_HEX, start=T0 + MS, attrs={
                "opik.trace_id": trace_id, "opik.parent_span_id": bridged}),
            jspan("top", GRANDCHILD_HEX, CHILD_HEX, start=T0 + 2 * MS, attrs={"opik.trace_id": trace_id}),
        ),
    )
    spans = {s.name: s for s in opik.spans()}
    assert (spans["bridge"].id, spans["bridge"].trace_id, spans["bridge"].parent_span_id) == (
        bridged, trace_id, upstream)
    assert spans["inner"].parent_span_id == bridged
    assert spans["inner"].id == derived_uuid_v7(T0 // MS, bytes.fromhex(CHILD_HEX))
    assert spans["top"].trace_id == trace_id and spans["top"].parent_span_id is None
    # Never a trace row for an id that came from opik.trace_id.
    assert opik.trace(trace_id) is None and opik.traces() == []
    assert {o.name for o in opik.orphans()} == {"bridge", "inner", "top"}
    for span in spans.values():
        assert not any(k.startswith("opik.") for k in [*span.input, *span.output, *span.metadata])
        assert "opik.trace_id" in span.attributes
    assert opik.warnings == []


def test_span_id_alone_is_used_and_trace_is_derived(opik):
    own = generate_id()
    post_json(
        opik,
        otlp_doc(
            jspan("root", ROOT_HEX, attrs={"opik.span_id": own}),
            jspan("child", CHILD_HEX, ROOT_HEX, start=T0 + MS),
        ),
    )
    root, child = opik.spans()
    assert root.id == own
    assert root.trace_id == derived_uuid_v7(T0 // MS, bytes.fromhex(TRACE_HEX))
    assert opik.trace(root.trace_id).root_span_id == own
    # The child's parent is derived from the OTel id, not the opik.span_id: an orphan.
    assert child.parent_span_id == derived_uuid_v7(T0 // MS, bytes.fromhex(ROOT_HEX)) != own
    assert [o.name for o in opik.orphans()] == ["child"]


def test_parent_without_trace_is_ignored(opik):
    post_json(opik, otlp_doc(jspan("child", CHILD_HEX, ROOT_HEX, attrs={"opik.parent_span_id": generate_id()})))
    (child,) = opik.spans()
    assert child.parent_span_id == derived_uuid_v7(T0 // MS, bytes.fromhex(ROOT_HEX))
    assert any("opik.parent_span_id" in w for w in opik.warnings)


@pytest.mark.parametrize(
    "bad",
    [123, str(uuid.uuid4()), " " + generate_id(), "not-a-uuid", [generate_id()]],
    ids=["int", "uuid4", "spaces", "garbage", "array"],
)
def test_invalid_opik_ids_are_ignored_with_a_warning(opik, bad):
    attrs = {"opik.trace_id": bad, "opik.span_id": bad}
    assert post_json(opik, otlp_doc(jspan("root", ROOT_HEX, attrs=attrs))).status_code == 200
    (span,) = opik.spans()
    assert span.id == derived_uuid_v7(T0 // MS, bytes.fromhex(ROOT_HEX))
    assert opik.trace(span.trace_id).name == "root"  # treated as a plain OTel root
    assert len(opik.warnings) == 2
    assert "opik.trace_id" not in span.input


def test_non_canonical_v7_spellings_are_accepted_and_canonicalised(opik):
    trace_id = generate_id()
    post_json(opik, otlp_doc(jspan("s", ROOT_HEX, attrs={"opik.trace_id": trace_id.upper().replace("-", "")})))
    assert opik.spans()[0].trace_id == trace_id


def test_resolve_span_ids_pure():
    root = resolve_span_ids({}, derived_trace_id="T", trace_timestamp_ms=5, otel_span_id=b"\1" * 8,
                            otel_parent_span_id=b"")
    assert (root.trace_id, root.parent_span_id, root.is_root, root.explicit_trace) == ("T", None, True, False)
    zero_parent = resolve_span_ids({}, derived_trace_id="T", trace_timestamp_ms=5, otel_span_id=b"\1" * 8,
                                   otel_parent_span_id=b"\0" * 8)
    assert zero_parent.is_root


# -------------------------------------------------------------------- attribute mapping


def test_attribute_mapping_and_root_span_copy(opik, providers):
    tracer = make_tracer(providers, opik.otlp_traces_endpoint, scope="my-instrumentation")
    with tracer.start_as_current_span("agent") as root:
        root.set_attributes({
            "thread_id": 42,
            "opik.tags": ["a", "b"],
            "opik.metadata": '{"team": "search"}',
            "opik.metadata.foo": "bar",
            "input.value": "question",
            "output.value": "answer",
            "my_private_marker": "leak",
        })
        with tracer.start_as_current_span("llm") as llm:
            llm.set_attributes({
                "gen_ai.request.model": "gpt-x",
                "gen_ai.system": "openai",
                "gen_ai.prompt": "p",
                "gen_ai.completion": "c",
                "gen_ai.request.temperature": 0.1,
                "gen_ai.response.id": "r1",
                "gen_ai.usage.input_tokens": 3,
                "gen_ai.usage.output_tokens": "4",
                "gen_ai.usage.cost": 0.5,
                "session.id": "s-1",
                "opik.tags": "x, y",
            })
            llm.record_exception(ValueError("boom"))
            llm.set_status(Status(StatusCode.ERROR, "boom"))
    spans = {s.name: s for s in opik.spans()}
    agent, llm_span = spans["agent"], spans["llm"]
    assert agent.thread_id == "42" and agent.tags == ["a", "b"]
    assert agent.metadata["team"] == "search" and agent.metadata["opik.metadata.foo"] == "bar"
    assert agent.metadata["integration"] == "my-instrumentation"
    assert agent.input == {"input.value": "question", "my_private_marker": "leak"}
    assert agent.output == {"output.value": "answer"}
    assert llm_span.input == {"gen_ai.prompt": "p", "gen_ai.request.temperature": 0.1}
    assert llm_span.output == {"gen_ai.completion": "c", "gen_ai.response.id": "r1"}
    assert (llm_span.model, llm_span.provider, llm_span.type) == ("gpt-x", "openai", "llm")
    assert llm_span.usage == {"prompt_tokens": 3, "completion_tokens": 4}
    assert llm_span.total_cost == 0.5
    assert llm_span.thread_id == "s-1" and llm_span.tags == ["x", "y"]
    assert llm_span.error_info["exception_type"] == "ValueError"
    assert llm_span.error_info["message"] == "boom"
    assert "ValueError" in llm_span.error_info["traceback"]
    assert llm_span.metadata["opentelemetry.events"][0]["name"] == "exception"

    (trace,) = opik.traces()
    assert (trace.thread_id, trace.tags, trace.input, trace.output) == (
        "42", ["a", "b"], agent.input, agent.output)
    assert trace.metadata == agent.metadata and trace.error_info is None


def test_error_status_without_exception_and_logfire_scope(opik):
    doc = otlp_doc(jspan("failed", ROOT_HEX, status={"code": 2, "message": "bad"}), scope="logfire")
    doc["resourceSpans"][0]["scopeSpans"].append(
        {"scope": {"name": "pydantic-ai"}, "spans": [jspan("x", CHILD_HEX, ROOT_HEX)]})
    post_json(opik, doc)
    failed = next(s for s in opik.spans() if s.name == "failed")
    assert failed.error_info["message"] == "bad"
    assert {s.metadata["integration"] for s in opik.spans()} == {"pydantic-ai"}


def test_parse_tags_and_map_attributes_pure():
    assert parse_tags('["a", "b"]') == ["a", "b"]
    assert parse_tags("a, b,,c") == ["a", "b", "c"]
    assert parse_tags("solo") == ["solo"]
    assert parse_tags(["x"]) == ["x"]
    mapped = map_attributes({"gen_ai.conversation.id": "c1", "input": 1, "gen_ai.input.messages": "m",
                             "gen_ai.output.messages": "o", "opik.span_id": "whatever"})
    assert mapped.thread_id == "c1"
    assert mapped.input == {"input": 1, "gen_ai.input.messages": "m"}
    assert mapped.output == {"gen_ai.output.messages": "o"}
    with pytest.raises(ValueError):
        map_attributes({"gen_ai.usage.input_tokens": "many"})


# ------------------------------------------------------------------------------ REST


def rest_trace(trace_id, name, project_name=None, **extra):
    return {"id": trace_id, "name": name, "project_name": project_name,
            "start_time": "2024-05-01T10:00:00Z", **extra}


def test_rest_trace_upsert_and_validation(opik):
    url = opik.url + "/v1/private/traces/batch"
    trace_id = generate_id()
    headers = {"projectName": "svc"}
    first = requests.post(url, json={"traces": [rest_trace(trace_id, "first", tags=["t"])]}, headers=headers)
    assert first.status_code == 204
    second = requests.post(url, json={"traces": [rest_trace(trace_id, "second", thread_id="th")]}, headers=headers)
    assert second.status_code == 204
    (trace,) = opik.traces()
    assert (trace.name, trace.project_name, trace.source, trace.thread_id) == ("second", "svc", "rest", "th")
    assert trace.start_time == "2024-05-01T10:00:00.000000Z"
    assert opik.stats["traces_written"] == 2

    explicit = requests.post(url, json={"traces": [rest_trace(generate_id(), "x", project_name="other")]})
    assert explicit.status_code == 204 and [t.name for t in opik.traces(project="other")] == ["x"]

    no_start = {"id": generate_id(), "name": "n"}
    assert requests.post(url, json={"traces": [no_start]}).status_code == 400
    assert requests.post(url, json={"traces": [rest_trace(str(uuid.uuid4()), "v4")]}).status_code == 400
    assert requests.post(url, json={"nope": []}).status_code == 400
    assert requests.post(url, data=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    assert len(opik.traces()) == 2  # rejected batches store nothing


def test_rest_spans_batch(opik):
    url = opik.url + "/v1/private/spans/batch"
    trace_id, span_id = generate_id(), generate_id()
    span = {"id": span_id, "trace_id": trace_id, "name": "sdk-span", "type": "llm",
            "start_time": "2024-05-01T10:00:00.5+00:00", "usage": {"prompt_tokens": 1}}
    assert requests.post(url, json={"spans": [span]}).status_code == 204
    (stored,) = opik.spans()
    assert (stored.id, stored.trace_id, stored.source, stored.type) == (span_id, trace_id, "rest", "llm")
    assert requests.post(url, json={"spans": [{**span, "trace_id": None}]}).status_code == 400
    assert requests.post(url, json={"spans": [{**span, "parent_span_id": "123"}]}).status_code == 400


# ------------------------------------------------------------------ orphans and tree


def test_orphans_and_tree(opik):
    trace_id, rowless = generate_id(), generate_id()
    requests.post(opik.url + "/v1/private/traces/batch", json={"traces": [rest_trace(trace_id, "conversation")]})
    a, missing = generate_id(), generate_id()
    post_json(
        opik,
        otlp_doc(
            jspan("a", "01" * 8, attrs={"opik.trace_id": trace_id, "opik.span_id": a}),
            jspan("b", "02" * 8, "01" * 8, start=T0 + MS, attrs={"opik.trace_id": trace_id, "opik.parent_span_id": a}),
            jspan("c", "03" * 8, start=T0 + 2 * MS, attrs={"opik.trace_id": trace_id, "opik.parent_span_id": missing}),
            jspan("d", "04" * 8, start=T0 + 3 * MS, attrs={"opik.trace_id": rowless}),
        ),
    )
    assert [o.name for o in opik.orphans()] == ["c", "d"]
    tree = opik.tree(trace_id).splitlines()
    assert tree[0].startswith(f"trace 'conversation' {trace_id}")
    assert tree[1] == f"  - a (..{a[-8:]})"
    assert tree[2].startswith("    - b (")
    assert tree[3] == "  ORPHANED (parent span not in this trace):"
    assert tree[4].startswith("    - c (") and f"parent ..{missing[-8:]} missing" in tree[4]
    assert "NO TRACE ROW" in opik.tree(rowless)
    everything = opik.trees()
    assert "conversation" in everything and rowless in everything


def test_tree_of_plain_otel_trace(opik):
    post_json(
        opik,
        otlp_doc(
            jspan("root", ROOT_HEX),
            jspan("child", CHILD_HEX, ROOT_HEX, start=T0 + MS),
            jspan("grandchild", GRANDCHILD_HEX, CHILD_HEX, start=T0 + 2 * MS),
        ),
    )
    (trace,) = opik.traces()
    lines = opik.tree(trace.id).splitlines()
    assert lines[0] == f"trace 'root' {trace.id} [project 'Default Project', otel-root]"
    assert [line.split(" (")[0] for line in lines[1:]] == ["  - root", "    - child", "      - grandchild"]


# ---------------------------------------------------------------- status codes


def test_api_key_required_and_redacted(providers):
    secret = "sekret-key-123"
    with LocalOpik(api_key=secret) as opik:
        endpoint = opik.otlp_traces_endpoint
        assert requests.post(endpoint, data=b"", headers=PROTOBUF).status_code == 401
        bearer = {**PROTOBUF, "Authorization": f"Bearer {secret}"}
        assert requests.post(endpoint, data=b"", headers=bearer).status_code == 401
        assert requests.post(endpoint, data=b"", headers={**PROTOBUF, "Authorization": secret}).status_code == 200
        rest = requests.post(opik.url + "/v1/private/traces/batch", json={"traces": []})
        assert rest.status_code == 401
        tracer = make_tracer(providers, endpoint, headers={"Authorization": secret})
        with tracer.start_as_current_span("ok"):
            pass
        assert [s.name for s in opik.spans()] == ["ok"]
        assert [r.status for r in opik.requests] == [401, 401, 200, 401, 200]
        assert opik.requests[1].headers["Authorization"] == "***"
        assert secret not in repr(opik) and secret not in repr(opik.requests)


def test_body_limit_413_settable_at_runtime():
    with LocalOpik(max_body_bytes=200) as opik:
        doc = otlp_doc(jspan("x" * 300, ROOT_HEX))
        assert post_json(opik, doc).status_code == 413
        opik.max_body_bytes = 100_000
        assert post_json(opik, doc).status_code == 200
        opik.max_body_bytes = 10
        big = requests.post(opik.otlp_traces_endpoint, data=b"\0" * 2_000_000, headers=PROTOBUF, timeout=5)
        assert big.status_code == 413
        assert len(opik.spans()) == 1


def raw_post(opik, content_length):
    conn = http.client.HTTPConnection("127.0.0.1", opik.port, timeout=5)
    try:
        conn.putrequest("POST", "/api/v1/private/otel/v1/traces")
        conn.putheader("Content-Type", "application/x-protobuf")
        conn.putheader("Content-Length", content_length)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_status_codes(opik):
    assert raw_post(opik, "abc") == 400
    assert raw_post(opik, "-5") == 400

    usage = otlp_doc(jspan("ok", ROOT_HEX), jspan("bad", CHILD_HEX, attrs={"gen_ai.usage.input_tokens": "lots"}))
    assert post_json(opik, usage).status_code == 400
    assert opik.spans() == []  # the whole request is rejected

    endpoint = opik.otlp_traces_endpoint
    assert requests.post(endpoint, data=b"\xff\xff\xff\xff", headers=PROTOBUF).status_code == 500
    assert requests.post(endpoint, data=b"{nope", headers={"Content-Type": "application/json"}).status_code == 500
    assert post_json(opik, {"resourceSpans": 5}).status_code == 500
    gz_garbage = {**PROTOBUF, "Content-Encoding": "gzip"}
    assert requests.post(endpoint, data=b"not gzip", headers=gz_garbage).status_code == 500
    assert requests.post(endpoint, data=b"", headers={"Content-Type": "text/plain"}).status_code == 415

    assert requests.post(opik.url + "/v1/private/otel/v1/logs", data=b"").status_code == 404
    assert requests.post(endpoint + "/", data=b"").status_code == 404
    wrong_method = requests.get(endpoint)
    assert (wrong_method.status_code, wrong_method.headers["Allow"]) == (405, "POST")
    assert requests.get(opik.url + "/v1/private/traces/batch").status_code == 405
    assert requests.post(opik.url + "/v1/private/otel/v1/metrics", data=b"x", headers=PROTOBUF).status_code == 501
    assert all(r.error for r in opik.requests)


# ---------------------------------------------------------------- fault injection


def test_fail_next_with_retry_after_is_retried_by_the_exporter(opik, providers):
    opik.fail_next(2, status=503, retry_after=0.1)
    tracer = make_tracer(providers, opik.otlp_traces_endpoint)
    started = time.monotonic()
    with tracer.start_as_current_span("eventually"):
        pass
    # The OTLP exporter's own backoff decides how long (SDK 1.41, the last for Python 3.9, ignores Retry-After).
    assert time.monotonic() - started >= 0.2
    assert [r.status for r in opik.requests] == [503, 503, 200]
    assert [r.injected for r in opik.requests] == [True, True, False]
    assert [s.name for s in opik.spans()] == ["eventually"]
    assert opik.stats["injected_failures"] == 2


def test_fail_next_headers_and_rest_paths(opik):
    opik.fail_next(2, status=429, retry_after="7")
    first = requests.post(opik.url + "/v1/private/traces/batch", json={"traces": [rest_trace(generate_id(), "t")]})
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    second = post_json(opik, otlp_doc(jspan("s", ROOT_HEX)))
    assert second.status_code == 429
    assert opik.traces() == [] and opik.spans() == []
    assert post_json(opik, otlp_doc(jspan("s", ROOT_HEX))).status_code == 200
    opik.fail_next(1, status=500)
    assert "Retry-After" not in post_json(opik, otlp_doc()).headers


def test_refuse_and_accept_connections_on_the_same_port(opik):
    port, url = opik.port, opik.url
    with opik.down():
        with pytest.raises(requests.ConnectionError):
            post_json(opik, otlp_doc(jspan("lost", ROOT_HEX)))
    assert (opik.port, opik.url) == (port, url)
    assert post_json(opik, otlp_doc(jspan("back", ROOT_HEX))).status_code == 200
    opik.refuse_connections()
    opik.refuse_connections()  # idempotent
    with pytest.raises(requests.ConnectionError):
        post_json(opik, otlp_doc())
    opik.accept_connections()
    assert post_json(opik, otlp_doc()).status_code == 200
    assert [s.name for s in opik.spans()] == ["back"]


def test_down_without_with_refuses_until_accept_connections(opik):
    opik.down()
    with pytest.raises(requests.ConnectionError):
        post_json(opik, otlp_doc(jspan("lost", ROOT_HEX)))
    opik.accept_connections()
    assert post_json(opik, otlp_doc(jspan("back", ROOT_HEX))).status_code == 200
    assert [s.name for s in opik.spans()] == ["back"]


def test_delay(opik):
    opik.delay(0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(opik.otlp_traces_endpoint, data=b"", headers=PROTOBUF, timeout=0.15)
    opik.delay(0)
    started = time.monotonic()
    assert requests.post(opik.otlp_traces_endpoint, data=b"", headers=PROTOBUF, timeout=1).status_code == 200
    assert time.monotonic() - started < 0.3


def test_duplicate_span_ids_are_counted_and_upserted(opik):
    doc = otlp_doc(jspan("same", ROOT_HEX))
    post_json(opik, doc)
    post_json(opik, doc)
    assert len(opik.spans()) == 1
    assert opik.stats == {"requests_received": 2, "spans_accepted": 2, "duplicate_span_ids": 1,
                          "traces_written": 2, "injected_failures": 0}


# ---------------------------------------------------------------- waiting, clear, main


def test_wait_for_and_clear(opik):
    timer = threading.Timer(0.1, post_json, args=(opik, otlp_doc(jspan("later", ROOT_HEX))))
    timer.start()
    assert opik.wait_for_spans(1, timeout=5)
    assert opik.wait_for_traces(1, timeout=5, project="Default Project")
    assert not opik.wait_for_spans(1, timeout=0.05, project="elsewhere")
    assert not opik.wait_for_traces(2, timeout=0.05)
    timer.join()
    opik.clear()
    assert (opik.spans(), opik.traces(), opik.requests, opik.projects()) == ([], [], [], [])
    assert opik.stats["requests_received"] == 0


def test_main_prints_url_and_trees_on_ctrl_c():
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "opik_otel.testing"],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("LocalOpik listening on http://127.0.0.1:")
        url = first.split()[-1]
        body = json.dumps(otlp_doc(jspan("demo-root", ROOT_HEX)))
        requests.post(url + "/v1/private/otel/v1/traces", data=body,
                      headers={"Content-Type": "application/json"}, timeout=5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "trace 'demo-root'" in out and "  - demo-root (" in out


def test_main_ctrl_c_right_after_start_still_prints_the_trees():
    # The SIGINT handler is in place before the first line is printed, so a Ctrl-C the
    # moment the server announces itself ends in the same orderly way.
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "opik_otel.testing"],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().startswith("LocalOpik listening on ")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, err) == (0, "")
    assert out.rstrip().endswith("(no traces received)")


def test_main_with_a_busy_port_says_so_in_one_line():
    repo = Path(__file__).resolve().parents[1]
    with LocalOpik() as busy:
        result = subprocess.run(
            [sys.executable, "-m", "opik_otel.testing", "--port", str(busy.port)],
            cwd=repo, capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"LocalOpik cannot listen on 127.0.0.1:{busy.port}: ")
    assert "--port" in line


def test_answers_the_opik_sdk_health_check():
    with LocalOpik() as opik:
        response = requests.get(f"{opik.url}/is-alive/ping", timeout=5)
        assert response.status_code == 200
