"""Issue 8: delivery through one durable queue, against hostile servers.

Each server here misbehaves the way real proxies and overloaded backends do: it never
answers, trickles its answer, redirects to a login page, refuses every size, or fails
most requests. All traffic is real HTTP over loopback; spans come from a real SDK
``TracerProvider`` and are encoded by the real OTLP encoder.
"""

import gzip
import logging
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opik_otel import OpikExporter, configure
from opik_otel.flushing import add_delivery_flush
from opik_otel.retry import RetryPolicy
from opik_otel.testing import LocalOpik

pytestmark = pytest.mark.usefixtures("isolated_opik_settings")

SUCCESS = SpanExportResult.SUCCESS
FAST = RetryPolicy(max_attempts=1_000_000, initial_backoff=0.01, max_backoff=0.1, jitter=0.0)
SLACK = 1.0  # seconds a deadline may overrun on a busy 2-core machine


class Hostile(ThreadingHTTPServer):
    """A loopback server whose every answer is chosen by ``mode``."""

    daemon_threads = True

    def __init__(self, mode: str, **settings) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.settings = settings
        self.delivered: List[str] = []  # span names of accepted OTLP requests
        self.attempts = 0
        self.sizes: List[int] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.arrived = threading.Event()  # a request came in
        self.random = random.Random(settings.get("seed", 7))
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api"

    def close(self) -> None:
        self.stop.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._page(200, b"<!DOCTYPE html><html><body>Please log in</body></html>", "text/html")

    def do_POST(self) -> None:
        server: Hostile = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with server.lock:
            server.attempts += 1
            server.sizes.append(len(body))
        mode = server.mode
        server.arrived.set()
        gate = server.settings.get("answer_gate")
        if gate is not None:
            gate.wait(30)
        if mode == "hang":
            server.stop.wait(60)
            return
        if mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not server.stop.is_set():
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)
            return
        if mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "/login")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "html":
            self._page(200, b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html; charset=utf-8")
            return
        if mode == "413":
            self._page(413, b"too large", "text/plain")
            return
        names = _span_names(body, self.headers.get("Content-Encoding"))
        if mode == "mostly500":
            with server.lock:
                fail = server.random.random() < server.settings.get("failure_rate", 0.7)
            if fail:
                self._page(500, b"overloaded", "text/plain")
                return
        if mode == "poison" and any("poison" in name for name in names):
            self._page(500, b"cannot parse", "text/plain")
            return
        with server.lock:
            server.delivered.extend(names)
        self._page(200, b"", None)

    def _page(self, status: int, body: bytes, content_type) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _span_names(body: bytes, encoding) -> List[str]:
    if encoding == "gzip":
        body = gzip.decompress(body)
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except Exception:
        return []
    return [span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


@pytest.fixture
def hostile():
    made: List[Hostile] = []

    def make(mode: str, **settings) -> Hostile:
        server = Hostile(mode, **settings)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def exporters(tmp_path):
    made: List[OpikExporter] = []

    def make(url: str, **options) -> OpikExporter:
        options.setdefault("spool_directory", tmp_path / f"queue-{len(made)}")
        options.setdefault("retry_policy", FAST)
        exporter = OpikExporter(url=url, **options)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown(200)


def spans_named(names: List[str]):
    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.delivery")
    for name in names:
        tracer.start_span(name).end()
    return list(memory.get_finished_spans())


# ------------------------------------------------------------------ deadlines that hold


@pytest.mark.parametrize("mode", ["hang", "trickle"])
def test_a_hung_or_trickling_server_never_holds_the_sender_past_its_deadline(hostile, exporters, mode):
    server = hostile(mode)
    exporter = exporters(server.url, timeout=1.0)
    assert exporter.export(spans_named(["a", "b"])) is SUCCESS
    started = time.monotonic()
    assert exporter.force_flush(3500) is False
    assert time.monotonic() - started < 3.5 + SLACK
    # Each request ended at its 1 s deadline and was tried again: not one stuck request.
    assert server.attempts >= 2, server.attempts
    assert exporter.stats["queue_items"] == 2  # the data stays queued
    started = time.monotonic()
    exporter.shutdown(1500)
    assert time.monotonic() - started < 1.5 + SLACK


def test_data_queued_behind_a_hung_server_is_delivered_by_the_next_run(hostile, tmp_path):
    server = hostile("hang")
    queue = tmp_path / "queue"
    first = OpikExporter(url=server.url, spool_directory=queue, timeout=1.0, retry_policy=FAST)
    assert first.export(spans_named([f"s{i}" for i in range(200)])) is SUCCESS
    first.shutdown(1500)  # the request in flight never got an answer
    server.mode = "ok"
    server.stop.set()
    second = OpikExporter(url=server.url, spool_directory=queue, retry_policy=FAST)
    try:
        assert second.force_flush(10_000) is True
    finally:
        second.shutdown(500)
    assert sorted(set(server.delivered)) == sorted(f"s{i}" for i in range(200))


# ------------------------------------------------------------------ answers read right


@pytest.mark.parametrize("mode", ["redirect", "html"])
def test_a_login_redirect_or_page_is_not_delivery(hostile, exporters, caplog, mode):
    server = hostile(mode)
    exporter = exporters(server.url)
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        assert exporter.export(spans_named(["kept"])) is SUCCESS
        assert exporter.force_flush(3000) is False
    assert exporter.stats["queue_items"] == 1 and exporter.stats["requests_sent"] == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    message = errors[0]
    assert server.url in message  # which URL
    if mode == "redirect":
        assert "redirect" in message and "302" in message and "/login" in message
        assert "final URL" in message  # what to fix
    else:
        assert "HTML" in message
    # The data waits for a working endpoint: switch the server to a real answer.
    server.mode = "ok"
    assert exporter.force_flush(5000) is True
    assert server.delivered == ["kept"]


def test_a_refusal_of_a_request_sent_before_the_flush_does_not_end_it(hostile, exporters):
    # The set-up was fixed while a request was in flight: that request's refusal says
    # nothing about the fixed set-up, so the flush waits for the next try.
    answer_now = threading.Event()
    server = hostile("html", answer_gate=answer_now)
    exporter = exporters(server.url)
    assert exporter.export(spans_named(["kept"])) is SUCCESS
    assert server.arrived.wait(5)
    server.mode = "ok"
    threading.Timer(0.3, answer_now.set).start()
    assert exporter.force_flush(5000) is True
    assert server.delivered == ["kept"]
    assert server.attempts == 2


def test_a_server_refusing_every_size_costs_a_bounded_number_of_requests(hostile, exporters, caplog):
    server = hostile("413")
    exporter = exporters(server.url, compression=None)
    names = [f"span-{i}" for i in range(512)]
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        assert exporter.export(spans_named(names)) is SUCCESS
        assert exporter.force_flush(10_000) is False
    assert server.attempts <= 16, server.attempts  # not 1023
    assert exporter.stats["requests_quarantined"] == 1  # set aside, counted
    limit_lines = [r.getMessage() for r in caplog.records if r.name == "opik_otel.exporter" and "413" in r.getMessage()]
    assert len(limit_lines) == 1 and "limit" in limit_lines[0], limit_lines
    # A second batch learns from the first: one request, not another descent.
    before = server.attempts
    exporter.export(spans_named(names))
    exporter.force_flush(5000)
    assert server.attempts - before <= 2


def test_a_mostly_failing_server_loses_nothing(hostile, exporters):
    server = hostile("mostly500", failure_rate=0.7)
    exporter = exporters(server.url)
    names = [f"b{batch}-{i}" for batch in range(20) for i in range(5)]
    for batch in range(20):
        assert exporter.export(spans_named(names[batch * 5 : batch * 5 + 5])) is SUCCESS
    assert exporter.force_flush(60_000) is True
    assert sorted(set(server.delivered)) == sorted(names)
    assert exporter.stats["requests_quarantined"] == 0


def test_one_record_the_server_can_never_take_is_quarantined_and_the_queue_moves_on(hostile, exporters, caplog):
    server = hostile("poison")
    exporter = exporters(server.url)
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        assert exporter.export(spans_named(["poison"])) is SUCCESS
        for index in range(6):
            assert exporter.export(spans_named([f"good-{index}"])) is SUCCESS
        exporter.force_flush(30_000)
    assert sorted(server.delivered) == [f"good-{index}" for index in range(6)]
    assert exporter.stats["requests_quarantined"] == 1
    assert exporter.stats["queue_records"] == 0
    assert any("500" in r.getMessage() for r in caplog.records)


def test_a_record_that_cannot_be_sent_as_stored_is_quarantined(opik_server, exporters):
    exporter = exporters(opik_server.url)
    from opik_otel.queue import Record

    stored = exporter.queue.append(
        Record(
            kind="spans", body=b"not gzip", destination=opik_server.otlp_traces_endpoint, project="p",
            workspace="default", content_type="application/x-protobuf", content_encoding="gzip", items=1,
        )
    )
    assert stored
    assert exporter.export(spans_named(["after"])) is SUCCESS
    # The damaged one was set aside, not delivered: the flush says so, once.
    assert exporter.force_flush(10_000) is False
    assert exporter.stats["requests_quarantined"] == 1
    assert exporter.force_flush(10_000) is True  # the queue moved on
    assert [s.name for s in opik_server.spans()] == ["after"]


@pytest.fixture
def opik_server():
    with LocalOpik() as server:
        yield server


# ------------------------------------------------- flush means delivered, every entry point


def test_sdk_batch_span_processor_flush_is_false_while_down_and_delivers_everything(opik_server, tmp_path):
    exporter = OpikExporter(url=opik_server.url, spool_directory=tmp_path / "q", retry_policy=FAST)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    add_delivery_flush(provider)
    tracer = provider.get_tracer("bsp")
    with opik_server.down():
        for index in range(300):
            tracer.start_span(f"s{index}").end()
        started = time.monotonic()
        assert provider.force_flush(1000) is False  # not delivered: Opik is down
        assert time.monotonic() - started < 1.0 + SLACK
    started = time.monotonic()
    for index in range(300, 400):
        tracer.start_span(f"s{index}").end()
    assert provider.force_flush(10_000) is True
    # Recovery noticed at once, not after a long backoff.
    assert time.monotonic() - started < 3.0
    provider.shutdown()
    names = sorted({s.name for s in opik_server.spans()})
    assert names == sorted(f"s{index}" for index in range(400))


def test_sdk_flush_with_nothing_left_in_the_processor_still_waits_for_delivery(opik_server, tmp_path):
    exporter = OpikExporter(url=opik_server.url, spool_directory=tmp_path / "q", retry_policy=FAST)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=10))
    add_delivery_flush(provider)
    with opik_server.down():
        provider.get_tracer("bsp").start_span("handed-over").end()
        time.sleep(0.3)  # the processor's worker handed it to the exporter already
        assert provider.force_flush(500) is False
    assert provider.force_flush(5000) is True
    assert [s.name for s in opik_server.spans()] == ["handed-over"]
    provider.shutdown()


def test_configure_twice_sends_each_span_once(opik_server, tmp_path, caplog):
    provider = TracerProvider(shutdown_on_exit=False)
    first = configure(url=opik_server.url, tracer_provider=provider, spool_directory=tmp_path / "q")
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        second = configure(url=opik_server.url, tracer_provider=provider, spool_directory=tmp_path / "q")
    assert second.exporter is first.exporter  # the first pipeline is reused
    assert any("already called" in r.getMessage() for r in caplog.records)
    for index in range(5):
        with provider.get_tracer("twice").start_as_current_span(f"s{index}"):
            pass
    assert second.force_flush(5000) is True
    assert sorted(s.name for s in opik_server.spans()) == [f"s{index}" for index in range(5)]
    assert opik_server.stats["duplicate_span_ids"] == 0
    first.shutdown(1000)


def test_track_disable_returns_a_pipeline_whose_attributes_work(opik_server, monkeypatch, tmp_path):
    monkeypatch.setenv("OPIK_TRACK_DISABLE", "true")
    provider = TracerProvider(shutdown_on_exit=False)
    tracing = configure(url=opik_server.url, tracer_provider=provider, spool_directory=tmp_path / "q")
    assert tracing.tracer_provider is provider
    with provider.get_tracer("off").start_as_current_span("ignored"):
        pass
    assert tracing.force_flush(1000) is True
    assert tracing.stats["queue_records"] == 0 and tracing.exporter.stats["requests_sent"] == 0
    assert tracing.span_processor.stats["queued"] == 0
    tracing.shutdown(100)
    assert opik_server.requests == []
    assert not (tmp_path / "q").exists()
