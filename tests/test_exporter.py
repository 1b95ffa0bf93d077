"""OpikExporter over real loopback HTTP against LocalOpik: routing, auth, gzip, config
precedence end to end, setup errors, secrets, private markers and trace-level options.

Nothing is mocked: spans go through a real SDK ``TracerProvider`` with the processors
``configure()`` installs (or a bare ``OpikExporter``), over HTTP, into ``LocalOpik``.
"""

import base64
import dataclasses
import http.client
import json
import time
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opik_otel import (
    ConfigurationError,
    OpikExporter,
    OpikSpanProcessor,
    attach_to_parent,
    configure,
    generate_id,
    resolve_config,
)
from opik_otel.attributes import MINTED_TRACE, OPIK_SPAN_ID, OPIK_TRACE_ID
from opik_otel.testing import LocalOpik

pytestmark = pytest.mark.usefixtures("isolated_opik_settings")

OTLP_PATH = "/api/v1/private/otel/v1/traces"
TRACES_PATH = "/api/v1/private/traces/batch"
SECRET = "sk-opik-Zq7xK9vLmN3pQr5T-distinctive"


# --------------------------------------------------------------------------- fixtures


def otlp_requests(server):
    return [r for r in server.requests if r.path == OTLP_PATH]


def assert_no_private_marker(server):
    """The minting marker must reach Opik nowhere: not as attribute, input or metadata."""
    for record in [*server.spans(), *server.traces()]:
        text = json.dumps(dataclasses.asdict(record), default=str)
        assert MINTED_TRACE not in text, record
        assert "opik_otel." not in text, record


# ------------------------------------------------------------ headers and routing


def test_two_exporters_route_to_two_projects_with_workspace_header(opik, pipelines):
    tracer_a, tracing_a = pipelines("a", url=opik.url, project_name="project-a", workspace="team-ws")
    tracer_b, tracing_b = pipelines("b", url=opik.url, project_name="project-b", workspace="team-ws")
    with tracer_a.start_as_current_span("a-root"):
        with tracer_a.start_as_current_span("a-child"):
            pass
    with tracer_b.start_as_current_span("b-root"):
        pass
    assert tracing_a.force_flush() and tracing_b.force_flush()

    assert sorted(opik.projects()) == ["project-a", "project-b"]
    assert {s.name for s in opik.spans(project="project-a")} == {"a-root", "a-child"}
    assert {s.name for s in opik.spans(project="project-b")} == {"b-root"}
    # Trace rows land in the same project (and workspace) as their spans.
    assert [t.name for t in opik.traces(project="project-a", workspace="team-ws")] == ["a-root"]
    assert [t.name for t in opik.traces(project="project-b", workspace="team-ws")] == ["b-root"]
    assert opik.traces(workspace="default") == []
    assert opik.orphans() == []
    for request in opik.requests:
        assert request.status in (200, 204), request
        assert request.workspace == "team-ws"
        assert request.headers["Comet-Workspace"] == "team-ws"
        assert request.headers["projectName"] == request.project
        assert "Authorization" not in request.headers  # no key configured: no header at all
    assert {r.project for r in otlp_requests(opik)} == {"project-a", "project-b"}
    assert_no_private_marker(opik)


def test_extra_headers_go_on_span_requests(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, headers={"X-Team": "search"})
    with tracer.start_as_current_span("root"):
        pass
    assert tracing.force_flush()
    (request,) = otlp_requests(opik)
    assert request.headers["X-Team"] == "search"
    assert request.headers["projectName"] == "Default Project"
    assert request.headers["Comet-Workspace"] == "default"


def test_authorization_is_the_raw_key_and_only_sent_when_configured(pipelines, caplog):
    caplog.set_level(logging.DEBUG)
    with LocalOpik(api_key=SECRET) as server:
        tracer, tracing = pipelines("nokey", url=server.url, project_name="auth")
        with tracer.start_as_current_span("unauthenticated"):
            pass
        # Refused credentials: not delivered, and the flush says so without waiting
        # for its timeout; the data stays queued for a run with the right key.
        started = time.monotonic()
        assert tracing.force_flush(20_000) is False
        assert time.monotonic() - started < 5
        assert tracing.exporter.stats["queue_records"] == 2
        assert server.spans() == [] and server.traces() == []
        assert {r.status for r in server.requests} == {401}
        assert all("Authorization" not in r.headers for r in server.requests)
        assert "401" in caplog.text
        tracing.shutdown(1000)

        tracer, tracing = pipelines("key", url=server.url, api_key=SECRET, project_name="auth")
        with tracer.start_as_current_span("authenticated"):
            pass
        assert tracing.force_flush()
        # LocalOpik compares the header to the raw key: "Bearer <key>" would be refused.
        assert [s.name for s in server.spans()] == ["authenticated"]
        assert [t.name for t in server.traces()] == ["authenticated"]
        accepted = [r for r in server.requests if r.status in (200, 204)]
        assert {r.path for r in accepted} == {OTLP_PATH, TRACES_PATH}
        assert all(r.headers.get("Authorization") == "***" for r in accepted)
    assert SECRET not in caplog.text


# ------------------------------------------------------------------------ gzip


def test_gzip_by_default_and_compression_none(opik, pipelines):
    tracer, tracing = pipelines("gzip", url=opik.url, project_name="gz")
    with tracer.start_as_current_span("compressed", attributes={"input.text": "x" * 5000}):
        pass
    assert tracing.force_flush()
    tracer, tracing = pipelines("plain", url=opik.url, project_name="plain", compression=None)
    with tracer.start_as_current_span("uncompressed", attributes={"input.text": "x" * 5000}):
        pass
    assert tracing.force_flush()

    (gz,) = [r for r in otlp_requests(opik) if r.project == "gz"]
    (plain,) = [r for r in otlp_requests(opik) if r.project == "plain"]
    assert gz.content_encoding == "gzip" and gz.status == 200
    assert plain.content_encoding is None and plain.status == 200
    assert gz.body_size < 1000 < 5000 < plain.body_size
    assert {s.name for s in opik.spans()} == {"compressed", "uncompressed"}
    assert opik.spans(project="gz")[0].input["input.text"] == "x" * 5000


def test_unknown_compression_is_a_setup_error():
    with pytest.raises(ConfigurationError, match="compression"):
        OpikExporter(url="http://127.0.0.1:9/api", compression="deflate", spool_directory=False)


# ---------------------------------------------------------- configuration sources


def write_config(path: Path, **values) -> Path:
    lines = ["[opik]"] + [f"{key} = {value}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_environment_variables_configure_the_exporter(opik, pipelines, monkeypatch):
    monkeypatch.setenv("OPIK_URL_OVERRIDE", opik.url)
    monkeypatch.setenv("OPIK_PROJECT_NAME", "env-project")
    monkeypatch.setenv("OPIK_WORKSPACE", "env-ws")
    tracer, tracing = pipelines()
    with tracer.start_as_current_span("from-env"):
        pass
    assert tracing.force_flush()
    assert [s.name for s in opik.spans(project="env-project", workspace="env-ws")] == ["from-env"]
    assert [t.name for t in opik.traces(project="env-project", workspace="env-ws")] == ["from-env"]


def test_config_file_from_opik_config_path_configures_the_exporter(pipelines, monkeypatch, tmp_path):
    with LocalOpik(api_key=SECRET) as server:
        path = write_config(
            tmp_path / "opik.ini",
            url_override=server.url,
            api_key=SECRET,
            project_name="file-project",
            workspace="file-ws",
        )
        monkeypatch.setenv("OPIK_CONFIG_PATH", str(path))
        tracer, tracing = pipelines()
        with tracer.start_as_current_span("from-file"):
            pass
        assert tracing.force_flush()
        assert [s.name for s in server.spans(project="file-project", workspace="file-ws")] == ["from-file"]
        assert len(server.traces(project="file-project")) == 1
        assert {r.status for r in server.requests} <= {200, 204}


def test_default_config_file_in_home_is_read(opik, pipelines, isolated_opik_settings):
    write_config(isolated_opik_settings / ".opik.config", url_override=opik.url, project_name="home-project")
    tracer, tracing = pipelines()
    with tracer.start_as_current_span("from-home"):
        pass
    assert tracing.force_flush()
    assert [s.name for s in opik.spans(project="home-project")] == ["from-home"]


def test_precedence_arguments_over_environment_over_file(opik, pipelines, monkeypatch, tmp_path):
    with LocalOpik() as other:
        path = write_config(
            tmp_path / "opik.ini", url_override=other.url, project_name="file-project", workspace="file-ws"
        )
        monkeypatch.setenv("OPIK_CONFIG_PATH", str(path))
        monkeypatch.setenv("OPIK_URL_OVERRIDE", opik.url)
        monkeypatch.setenv("OPIK_PROJECT_NAME", "env-project")

        env_tracer, env_tracing = pipelines("env")
        arg_tracer, arg_tracing = pipelines("arg", project_name="arg-project")
        with env_tracer.start_as_current_span("env-wins-over-file"):
            pass
        with arg_tracer.start_as_current_span("arg-wins-over-env"):
            pass
        assert env_tracing.force_flush() and arg_tracing.force_flush()

        assert other.requests == []  # the file's URL lost to the environment's
        # The workspace is only set in the file, so the file still supplies it.
        assert [s.name for s in opik.spans(project="env-project", workspace="file-ws")] == ["env-wins-over-file"]
        assert [s.name for s in opik.spans(project="arg-project", workspace="file-ws")] == ["arg-wins-over-env"]
        assert opik.spans(project="file-project") == []


class _PathMappingProxy:
    """Forwards ``/opik/api/...`` to LocalOpik's ``/api/...``, as Opik Cloud's layout needs.

    A URL embedded in an API key always becomes ``{baseUrl}/opik/api``, while LocalOpik
    serves under ``/api``; this small proxy bridges the two over real HTTP. The target
    port is set after start, because the key (which names the proxy) must exist before
    the LocalOpik that requires it.
    """

    def __init__(self) -> None:
        proxy = self
        self.paths = []
        self.target_port = None

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                proxy.paths.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                path = self.path.replace("/opik/api/", "/api/", 1) if self.path.startswith("/opik/api/") else "/x"
                connection = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=10)
                try:
                    connection.request("POST", path, body=body, headers=headers)
                    response = connection.getresponse()
                    payload, status = response.read(), response.status
                finally:
                    connection.close()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def key_with_url(base_url: str, secret: str = SECRET) -> str:
    suffix = base64.b64encode(json.dumps({"baseUrl": base_url}).encode()).decode().rstrip("=")
    return f"{secret}*{suffix}"


def test_api_key_with_embedded_url_resolves_to_its_opik_api_base():
    key = key_with_url("https://acme.comet.com")
    config = resolve_config(api_key=key, environ={})
    assert config.url == "https://acme.comet.com/opik/api"
    assert config.api_key == key  # the whole key is still the credential
    assert config.is_cloud  # a cloud URL, valid because the key is there
    # An explicit URL, from an argument or the environment, beats the embedded one.
    assert resolve_config(url="http://localhost:5173/api", api_key=key, environ={}).url == "http://localhost:5173/api"
    environ = {"OPIK_URL_OVERRIDE": "http://opik.internal:8080/api", "OPIK_API_KEY": key}
    assert resolve_config(environ=environ).url == "http://opik.internal:8080/api"
    assert SECRET not in repr(config) and SECRET not in str(config)


def test_api_key_with_embedded_url_delivers_over_http(pipelines, monkeypatch):
    """Only OPIK_API_KEY is set; spans and trace rows go to its embedded URL + /opik/api."""
    proxy = _PathMappingProxy()
    try:
        key = key_with_url(f"http://127.0.0.1:{proxy.port}")
        with LocalOpik(api_key=key) as target:
            proxy.target_port = target.port
            monkeypatch.setenv("OPIK_API_KEY", key)
            tracer, tracing = pipelines(project_name="key-url")
            assert tracing.exporter.config.url == f"http://127.0.0.1:{proxy.port}/opik/api"
            with tracer.start_as_current_span("via-key-url"):
                pass
            assert tracing.force_flush()
            assert [s.name for s in target.spans(project="key-url")] == ["via-key-url"]
            assert [t.name for t in target.traces(project="key-url")] == ["via-key-url"]
            assert {r.status for r in target.requests} == {200, 204}  # the full key authenticated
    finally:
        proxy.close()
    assert sorted(proxy.paths) == ["/opik/api/v1/private/otel/v1/traces", "/opik/api/v1/private/traces/batch"]


# ------------------------------------------------------------------ setup errors


@pytest.mark.parametrize(
    "url, fragments",
    [
        ("https://www.comet.com/opik/api", ["No Opik API key", "Opik Cloud", "OPIK_API_KEY", "api_key="]),
        ("grpc://localhost:4317", ["OTLP/gRPC", "only accepts OTLP over HTTP", "http://localhost:5173/api"]),
        ("http://localhost:4317", ["OTLP/gRPC", "only accepts OTLP over HTTP"]),
        (
            "http://localhost:5173/api/v1/private/otel/v1/traces",
            ["is an endpoint, not the Opik API base", "use http://localhost:5173/api instead"],
        ),
        (
            "http://localhost:5173/api/v1/private/otel",
            ["is an endpoint, not the Opik API base", "use http://localhost:5173/api instead"],
        ),
        ("http://localhost:4318", ["port 4318", "Collector", "otlphttp exporter"]),
        ("http://otel-collector:4318/v1/traces", ["port 4318", "Collector"]),
    ],
)
def test_setup_errors_are_clear(url, fragments):
    with pytest.raises(ConfigurationError) as caught:
        OpikExporter(url=url, spool_directory=False)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "url= argument" in message  # names the setting to fix


def test_setup_error_names_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("OPIK_URL_OVERRIDE", "grpc://collector:4317")
    with pytest.raises(ConfigurationError, match="OPIK_URL_OVERRIDE") as caught:
        configure(tracer_provider=TracerProvider(), spool_directory=tmp_path / "spool")
    assert "gRPC" in str(caught.value)


def test_no_settings_at_all_means_cloud_without_key(tmp_path):
    with pytest.raises(ConfigurationError) as caught:
        configure(tracer_provider=TracerProvider(), spool_directory=tmp_path / "spool")
    message = str(caught.value)
    assert "default Opik Cloud URL" in message and "OPIK_API_KEY" in message and "OPIK_URL_OVERRIDE" in message


def test_configure_refuses_at_setup_and_leaves_the_provider_alone(tmp_path, opik):
    provider = TracerProvider()
    with pytest.raises(ConfigurationError):
        configure(url="grpc://localhost:4317", tracer_provider=provider, spool_directory=tmp_path / "spool")
    with provider.get_tracer("t").start_as_current_span("after-error") as span:
        assert OPIK_TRACE_ID not in (span.attributes or {})  # no processor was half-installed
    provider.shutdown()


def test_grpc_otlp_endpoint_is_refused(opik):
    with pytest.raises(ConfigurationError, match="gRPC"):
        OpikExporter(url=opik.url, otlp_endpoint="grpc://collector:4317", spool_directory=False)


def test_url_answering_404_logs_one_actionable_error_and_never_raises(opik, pipelines, caplog):
    caplog.set_level(logging.WARNING)
    wrong = opik.url + "/wrong"
    tracer, tracing = pipelines(url=wrong, project_name="lost")
    for index in range(3):
        with tracer.start_as_current_span(f"root-{index}") as span:
            with tracer.start_as_current_span("child"):
                span.set_attribute("input.index", index)
        # Returns at once, nothing raised in the app; not delivered, so False.
        assert tracing.force_flush(20_000) is False
    # A wrong URL is the set-up's fault, not the data's: it stays queued (in order).
    assert tracing.exporter.stats["queue_records"] >= 1

    assert opik.spans() == [] and opik.traces() == []
    assert {r.status for r in opik.requests} == {404}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    endpoints = (wrong + "/v1/private/otel/v1/traces", wrong + "/v1/private/traces/batch")
    named = []
    for record in errors:
        message = record.getMessage()
        assert "404" in message and "http://localhost:5173/api" in message, message
        assert record.exc_info is None  # a one-line message, not a traceback
        named += [endpoint for endpoint in endpoints if endpoint in message]
    # One error per endpoint (spans, trace rows) naming it, not one per batch.
    assert len(named) == len(errors) == len(set(named)), caplog.text
    # The queue is ordered: the first record (trace rows) waits at its head, named.
    assert named == [endpoints[1]], caplog.text


def test_direct_export_to_404_is_queued_and_the_flush_fails_without_raising(opik, tmp_path):
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(OpikSpanProcessor(mint_root_ids=True))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("root"):
        pass
    spans = memory.get_finished_spans()
    exporter = OpikExporter(url=opik.url + "/wrong", spool_directory=tmp_path / "spool")
    # Stored for delivery: export succeeds; the flush reports that Opik did not take it.
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.force_flush(5000) is False
    exporter.shutdown(1000)
    assert exporter.export(spans) is SpanExportResult.FAILURE  # after shutdown, still no raise
    assert opik.spans() == []


# ------------------------------------------------------------------------ secrets


def test_api_key_never_appears_in_reprs_logs_errors_or_spool(pipelines, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)  # everything, urllib3's request logging included
    spool = tmp_path / "secret-spool"
    seen = []
    with LocalOpik(api_key=SECRET) as server:
        tracer, tracing = pipelines(url=server.url, api_key=SECRET, project_name="secret", spool_directory=spool)
        seen += [repr(tracing), repr(tracing.exporter), repr(tracing.exporter.config), str(tracing.exporter.config)]

        with server.down():  # undeliverable: retried, then spooled on disk
            with tracer.start_as_current_span("while-down", attributes={"input.q": "hello"}):
                pass
            assert tracing.force_flush(500) is False  # queued on disk, not delivered
            spooled = [p for p in spool.rglob("*") if p.is_file() and p.stat().st_size > 0]
            assert spooled, "nothing was spooled while Opik was down"
            for path in spooled:
                assert SECRET.encode() not in path.read_bytes(), path
        assert tracing.force_flush()  # replay re-adds the key from memory, not from disk
        assert [s.name for s in server.spans(project="secret")] == ["while-down"]
        assert len(server.traces(project="secret")) == 1

        # A wrong key gets a 401 whose log line must not quote either key.
        tracer_bad, tracing_bad = pipelines("bad", url=server.url, api_key=SECRET + "-wrong", project_name="secret")
        with tracer_bad.start_as_current_span("refused"):
            pass
        assert tracing_bad.force_flush() is False  # refused: kept for a run with the right key
        assert any(r.status == 401 for r in server.requests)
        tracing_bad.shutdown(1000)

    for bad_key in (SECRET + "\nX-Injected: 1", SECRET + "\x01", SECRET + "\u2713", " " + SECRET + "\tx"):
        with pytest.raises(ConfigurationError) as caught:
            OpikExporter(url="http://127.0.0.1:9/api", api_key=bad_key, spool_directory=False)
        seen.append(str(caught.value))
        seen.append(repr(caught.value))
    with pytest.raises(ConfigurationError) as caught:
        OpikExporter(url="https://www.comet.com/opik/api", api_key=None, spool_directory=False)
    seen.append(str(caught.value))

    seen.append(caplog.text)
    for text in seen:
        assert SECRET not in text, text


def test_malformed_key_url_suffix_warns_without_quoting_the_key(caplog):
    caplog.set_level(logging.WARNING)
    config = resolve_config(url="http://localhost:5173/api", api_key=SECRET + "*not-base64!", environ={})
    assert config.url == "http://localhost:5173/api"
    config = resolve_config(api_key=SECRET + "*not-base64!", environ={})
    assert config.url == "https://www.comet.com/opik/api"
    assert "does not decode" in caplog.text
    assert SECRET not in caplog.text and SECRET not in repr(config)


# ---------------------------------------------------- what reaches Opik's storage


def test_private_marker_never_reaches_opik(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, project_name="marker")
    with tracer.start_as_current_span("minted-root") as root:
        with tracer.start_as_current_span("child"):
            pass
        # The marker is on the live span (that is how the exporter finds minted roots) ...
        assert root.attributes[MINTED_TRACE] is True
    with tracer.start_as_current_span("attached-root") as other:
        assert attach_to_parent(other, {"opik_trace_id": generate_id()})
    assert tracing.force_flush()
    assert len(opik.spans()) == 3
    for span in opik.spans():
        assert MINTED_TRACE not in span.attributes and MINTED_TRACE not in span.input
        assert OPIK_TRACE_ID in span.attributes and OPIK_SPAN_ID in span.attributes
    # ... but never in what Opik stores.
    assert_no_private_marker(opik)


def test_trace_level_tags_metadata_and_thread_on_root_spans_and_trace_rows(opik, pipelines):
    tracer, tracing = pipelines(
        url=opik.url,
        project_name="trace-level",
        tags=["prod", "checkout"],
        metadata={"release": "1.4.2", "region": "eu"},
        thread_id="conversation-42",
    )
    with tracer.start_as_current_span("root", attributes={"opik.tags": ["own-tag"], "opik.metadata": '{"region": "us"}'}):
        with tracer.start_as_current_span("child"):
            pass
    with tracer.start_as_current_span("second-root", attributes={"session.id": "session-7"}):
        pass
    assert tracing.force_flush()

    spans = {s.name: s for s in opik.spans(project="trace-level")}
    root, child, second = spans["root"], spans["child"], spans["second-root"]
    assert set(root.tags) == {"prod", "checkout", "own-tag"}
    assert root.metadata["release"] == "1.4.2"
    assert root.metadata["region"] == "us"  # the span's own metadata wins
    assert root.thread_id == "conversation-42"
    assert child.tags == [] and "release" not in child.metadata and child.thread_id is None
    assert second.thread_id == "session-7"  # a span's own thread attribute is kept

    rows = {t.name: t for t in opik.traces(project="trace-level")}
    assert set(rows) == {"root", "second-root"}
    row = rows["root"]
    assert row.id == root.trace_id == child.trace_id
    assert set(row.tags) == {"prod", "checkout", "own-tag"}
    assert row.metadata["release"] == "1.4.2" and row.metadata["region"] == "us"
    assert row.thread_id == "conversation-42"
    assert set(rows["second-root"].tags) == {"prod", "checkout"}
    assert rows["second-root"].metadata == {"release": "1.4.2", "region": "eu"}
    assert opik.orphans() == []


def test_trace_level_tags_merge_with_span_tags_in_every_form_opik_accepts(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, project_name="tag-forms", tags=["prod"])
    with tracer.start_as_current_span("comma", attributes={"opik.tags": "a, b"}):
        pass
    with tracer.start_as_current_span("json", attributes={"opik.tags": '["c", "prod"]'}):
        pass
    assert tracing.force_flush()

    spans = {s.name: s for s in opik.spans(project="tag-forms")}
    assert spans["comma"].tags == ["prod", "a", "b"]
    assert spans["json"].tags == ["prod", "c"]


def test_invalid_usage_string_is_dropped_with_a_warning_and_the_batch_delivered(opik, pipelines, caplog):
    caplog.set_level(logging.WARNING)
    # Control: as-is, Opik refuses the whole request for such an attribute.
    plain = TracerProvider()
    plain.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=opik.otlp_traces_endpoint, timeout=5)))
    with plain.get_tracer("t").start_as_current_span("raw", attributes={"gen_ai.usage.input_tokens": "lots"}):
        pass
    plain.shutdown()
    assert [r.status for r in opik.requests] == [400] and opik.spans() == []

    tracer, tracing = pipelines(url=opik.url, project_name="usage")
    with tracer.start_as_current_span("llm-call") as span:
        span.set_attribute("gen_ai.usage.input_tokens", "lots")  # not JSON: would fail the request
        span.set_attribute("gen_ai.usage.output_tokens", 7)
        span.set_attribute("gen_ai.usage.total_tokens", "12")  # a JSON string is fine
        with tracer.start_as_current_span("sibling-in-same-batch"):
            pass
    assert tracing.force_flush()

    spans = {s.name: s for s in opik.spans(project="usage")}
    assert set(spans) == {"llm-call", "sibling-in-same-batch"}
    usage = spans["llm-call"].usage
    assert usage == {"completion_tokens": 7, "total_tokens": 12}
    assert "gen_ai.usage.input_tokens" not in spans["llm-call"].attributes
    assert len(opik.traces(project="usage")) == 1
    warnings = [r.getMessage() for r in caplog.records if "gen_ai.usage.input_tokens" in r.getMessage()]
    assert len(warnings) == 1 and "not JSON" in warnings[0]
