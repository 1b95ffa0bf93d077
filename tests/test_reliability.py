"""Issue 5 under fault injection: nothing lost when Opik is down, never in the app's way.

Every rule is exercised for real: spans go over loopback HTTP to ``LocalOpik``, whose
fault injection (refused connections, injected statuses with ``Retry-After``, slow
answers, body-size limits) plays the failing Opik. Backoffs are shortened through the
exporter's ``retry_policy`` / ``replay_policy`` knobs so the whole file runs in seconds.
"""

import json
import logging
import multiprocessing
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opik_otel import ConfigurationError, OpikExporter, OpikSpanProcessor, configure
from opik_otel.attributes import OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID
from opik_otel.batching import OpikBatchSpanProcessor
from opik_otel.retry import RetryPolicy
from opik_otel.testing import LocalOpik

pytestmark = pytest.mark.usefixtures("isolated_opik_settings")

SUCCESS = SpanExportResult.SUCCESS
FAILURE = SpanExportResult.FAILURE
OTLP_PATH = "/api/v1/private/otel/v1/traces"
TRACES_PATH = "/api/v1/private/traces/batch"
MARKER = re.compile(r"…\[truncated (\d+) bytes by opik_otel\]$")

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, jitter=0.0)
FAST_REPLAY = RetryPolicy(max_attempts=1_000_000, initial_backoff=0.02, max_backoff=0.1)
FAST = {"retry_policy": FAST_RETRY, "replay_policy": FAST_REPLAY, "timeout": 3.0}
SLACK = 0.6  # seconds a timeout-bound call may overrun on a busy CI machine


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def opik():
    with LocalOpik() as server:
        yield server
        server.delay(0)


@pytest.fixture
def exporters(tmp_path):
    """Factory of OpikExporters with fast backoffs and a private spool; shut down after."""
    made: List[OpikExporter] = []

    def make(url: str, **options) -> OpikExporter:
        options.setdefault("spool_directory", tmp_path / f"spool-{len(made)}")
        for key, value in FAST.items():
            options.setdefault(key, value)
        exporter = OpikExporter(url=url, **options)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown(500)


@pytest.fixture
def pipelines(tmp_path):
    """Factory of configure()d pipelines on private providers; shut down after."""
    made = []

    def make(url: str, **options):
        provider = TracerProvider(shutdown_on_exit=False)
        options.setdefault("spool_directory", tmp_path / f"pipeline-spool-{len(made)}")
        options.setdefault("schedule_delay_millis", 20)
        for key, value in FAST.items():
            options.setdefault(key, value)
        tracing = configure(url=url, tracer_provider=provider, **options)
        made.append(tracing)
        return provider.get_tracer("tests.reliability"), tracing

    yield make
    for tracing in made:
        tracing.shutdown(500)


# ---------------------------------------------------------------------------- helpers


def build_spans(count: int, *, name: str = "span", minted: bool = True, attributes=None, children: int = 3) -> List[ReadableSpan]:
    """Finished spans as configure() makes them: traces of a root and up to ``children``
    children, with Opik ids (and trace rows to write, when ``minted``)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(OpikSpanProcessor(mint_root_ids=minted))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.reliability")
    made = 0
    while made < count:
        with tracer.start_as_current_span(f"{name}-{made}", attributes=attributes):
            made += 1
            for _ in range(min(children, count - made)):
                with tracer.start_as_current_span(f"{name}-{made}", attributes=attributes):
                    made += 1
    return list(memory.get_finished_spans())


def otel_ids(spans: Sequence[ReadableSpan]) -> List[str]:
    return [format(span.context.span_id, "016x") for span in spans]


def delivered_ids(opik: LocalOpik) -> List[str]:
    return [record.otel_span_id for record in opik.spans()]


def record_successful_posts(exporter: OpikExporter) -> List[tuple]:
    """Spy on the exporter's HTTP sends: (kind, uncompressed body) of each 2xx one."""
    sent: List[tuple] = []
    original = exporter._post

    def spy(kind, body, headers=None):
        outcome = original(kind, body, headers)
        if outcome.ok:
            sent.append((kind, body))
        return outcome

    exporter._post = spy
    return sent


def span_names(body: bytes) -> List[str]:
    request = ExportTraceServiceRequest.FromString(body)
    return [span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def records_of(caplog, logger: str, fragment: str) -> List[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and fragment in r.getMessage()]


def isolated_env(home: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPIK_")}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return env


def run_python(code: str, args: Sequence[str], env: Dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def closed_port_url() -> str:
    """An Opik URL on which connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


# ----------------------------------------------------------------------- 1. retries


def test_outage_spools_and_replays_everything_in_order_without_duplicates(opik, exporters):
    exporter = exporters(opik.url)
    sent = record_successful_posts(exporter)
    before = build_spans(8, name="before")
    assert exporter.export(before) is SUCCESS

    batches = [build_spans(8, name=f"down{i}") for i in range(5)]
    with opik.down():
        for batch in batches:
            assert exporter.export(batch) is SUCCESS  # kept, not lost
        stats = exporter.stats
        assert stats["spool_records"] == 10  # a trace-row request and a span request per batch
        assert stats["requests_refused"] == stats["requests_lost"] == 0
    assert exporter.force_flush(10_000) is True

    after = build_spans(8, name="after")
    assert exporter.export(after) is SUCCESS  # the spool is empty again: sent directly
    emitted = otel_ids(before) + [i for b in batches for i in otel_ids(b)] + otel_ids(after)
    assert sorted(delivered_ids(opik)) == sorted(emitted)
    assert opik.stats["duplicate_span_ids"] == 0
    assert len(opik.traces()) == 2 * 7  # every minted trace got its row (REST, replayed too)
    assert not opik.orphans()

    # Replayed oldest first: the batches reach Opik in the order they were exported.
    order = [name.split("-")[0] for kind, body in sent if kind == "otlp" for name in span_names(body)]
    firsts = [order.index(prefix) for prefix in ["before"] + [f"down{i}" for i in range(5)] + ["after"]]
    assert firsts == sorted(firsts)
    assert exporter.stats["requests_replayed"] == 10


def test_timeouts_go_to_the_spool_without_holding_the_export_thread(opik, exporters):
    exporter = exporters(opik.url, timeout=0.3)
    spans = build_spans(12)
    opik.delay(1.0)  # slower than the exporter's timeout
    started = time.monotonic()
    assert exporter.export(spans) is SUCCESS
    # One timed-out attempt then the spool: not attempts x timeout.
    assert time.monotonic() - started < 0.3 * 2 + SLACK
    assert exporter.stats["spool_records"] >= 1
    opik.delay(0)
    assert exporter.force_flush(10_000) is True
    assert sorted(set(delivered_ids(opik))) == sorted(otel_ids(spans))
    # A timed-out request may have been stored after all: re-sending it is an upsert.
    assert len(opik.spans()) == len(spans)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried_with_backoff(opik, exporters, status):
    exporter = exporters(opik.url)
    spans = build_spans(8)
    opik.fail_next(2, status)
    assert exporter.export(spans) is SUCCESS
    assert opik.stats["injected_failures"] == 2
    assert exporter.stats["requests_retried"] == 2
    assert exporter.stats["spool_records"] == 0  # delivered within the export's retries
    assert sorted(delivered_ids(opik)) == sorted(otel_ids(spans))
    assert len(opik.traces()) == 2


def test_retry_after_is_honoured_on_the_export_thread(opik, exporters):
    exporter = exporters(opik.url, retry_policy=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=2.0))
    spans = build_spans(4, minted=False)
    opik.fail_next(1, 503, retry_after=0.8)
    assert exporter.export(spans) is SUCCESS
    first, second = [r for r in opik.requests if r.path == OTLP_PATH]
    assert first.status == 503 and second.status == 200
    assert 0.7 <= second.received_at - first.received_at < 2.5
    assert sorted(delivered_ids(opik)) == sorted(otel_ids(spans))


def test_long_retry_after_sends_to_the_spool_and_the_replayer_waits_as_asked(opik, exporters):
    # The export thread may wait 0.05 s at most; Opik asks for 1 s.
    exporter = exporters(opik.url)
    spans = build_spans(8)
    opik.fail_next(1, 429, retry_after=1)
    started = time.monotonic()
    assert exporter.export(spans) is SUCCESS
    assert time.monotonic() - started < 0.9  # not waiting on the export thread
    assert exporter.force_flush(10_000) is True
    writes = [r for r in opik.requests if r.path in (OTLP_PATH, TRACES_PATH)]
    assert writes[0].status == 429
    # Nobody (replayer or export thread) called Opik again before the second was up.
    assert writes[1].received_at - writes[0].received_at >= 0.95
    assert sorted(delivered_ids(opik)) == sorted(otel_ids(spans))


@pytest.mark.parametrize(
    "status, advice",
    [
        (400, "malformed"),
        (401, "OPIK_API_KEY"),
        (403, "OPIK_WORKSPACE"),
        (404, "OPIK_URL_OVERRIDE"),
        (405, "OPIK_URL_OVERRIDE"),
        (422, "not retried"),
    ],
)
def test_other_4xx_are_never_retried_and_logged_once_with_advice(opik, exporters, caplog, status, advice):
    exporter = exporters(opik.url)
    opik.fail_next(5, status)
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        for index in range(5):
            assert exporter.export(build_spans(3, minted=False, name=f"b{index}")) is FAILURE
    assert opik.stats["requests_received"] == 5  # one request per batch: no retry
    assert exporter.stats["requests_refused"] == 5
    assert exporter.stats["spool_records"] == 0  # refused data is not kept for ever
    logged = records_of(caplog, "opik_otel.exporter", f"HTTP {status}")
    assert len(logged) == 1
    assert advice in logged[0].getMessage()


def test_real_401_says_to_check_the_api_key_once(exporters, caplog):
    with LocalOpik(api_key="right-key") as opik:
        exporter = exporters(opik.url, api_key="wrong-key")
        with caplog.at_level(logging.WARNING, logger="opik_otel"):
            for _ in range(3):
                assert exporter.export(build_spans(4)) is FAILURE
        logged = records_of(caplog, "opik_otel.exporter", "HTTP 401")
        # One line per endpoint (trace rows, spans), not one per request.
        assert 1 <= len(logged) <= 2
        assert all("OPIK_API_KEY" in r.getMessage() and "wrong-key" not in r.getMessage() for r in logged)
        assert {r.status for r in opik.requests} == {401}
        assert len(opik.requests) == 6


def test_real_404_says_to_check_the_url(opik, exporters, caplog):
    exporter = exporters(opik.url.replace("/api", "/not-opik"))
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        for _ in range(3):
            assert exporter.export(build_spans(4, minted=False)) is FAILURE
    logged = records_of(caplog, "opik_otel.exporter", "HTTP 404")
    assert len(logged) == 1
    assert "is not an Opik API base URL" in logged[0].getMessage()
    assert "OPIK_URL_OVERRIDE" in logged[0].getMessage()


# -------------------------------------------------------------------------- 2. size


def random_text(size: int) -> str:
    return os.urandom(size // 2).hex()  # hardly compressible, so gzip cannot hide it


def test_413_splits_in_halves_recursively_until_accepted(exporters):
    with LocalOpik(max_body_bytes=20_000) as opik:
        exporter = exporters(opik.url, compression=None)
        spans = build_spans(64, minted=False, attributes={"blob": random_text(2000)})
        assert exporter.export(spans) is SUCCESS
        statuses = [r.status for r in opik.requests]
        assert statuses.count(413) >= 7  # 64 spans of 2 KB need 8+ requests: three levels
        assert all(r.body_size <= 20_000 for r in opik.requests if r.status == 200)
        assert sorted(delivered_ids(opik)) == sorted(otel_ids(spans))
        assert exporter.stats["spans_truncated"] == 0  # splitting sufficed
        assert exporter.stats["requests_split"] >= 7


def test_413_on_a_replayed_request_is_split_too(exporters):
    with LocalOpik() as opik:
        exporter = exporters(opik.url, compression=None)
        spans = build_spans(48, attributes={"blob": random_text(2000)})
        with opik.down():
            assert exporter.export(spans) is SUCCESS
        opik.max_body_bytes = 25_000  # smaller than the spooled requests
        assert exporter.force_flush(10_000) is True
        assert 413 in [r.status for r in opik.requests]
        assert sorted(delivered_ids(opik)) == sorted(otel_ids(spans))
        assert len(opik.traces()) == 12
        assert exporter.stats["spool_records"] == 0
        assert exporter.stats["requests_refused"] == 0


@pytest.mark.parametrize("limit", ["max_request_bytes", "413"])
def test_a_single_5mb_span_is_truncated_with_a_marker_never_dropped(exporters, limit):
    huge = random_text(5 * 1024 * 1024)
    with LocalOpik(max_body_bytes=1_000_000 if limit == "413" else None) as opik:
        options = {"max_request_bytes": 64 * 1024 * 1024} if limit == "413" else {}
        exporter = exporters(opik.url, **options)
        spans = build_spans(2, attributes={"input.value": huge, "gen_ai.request.model": "m"}, children=1)
        root = next(s for s in spans if s.parent is None)
        assert exporter.export(spans) is SUCCESS
        assert not opik.orphans()
        stored = {r.otel_span_id: r for r in opik.spans()}
        assert sorted(stored) == sorted(otel_ids(spans))
        for span in spans:
            record = stored[format(span.context.span_id, "016x")]
            value = record.attributes["input.value"]
            match = MARKER.search(value)
            assert match, "the cut value says how much was cut"
            assert len(value) < len(huge)
            assert value[: match.start()] == huge[: match.start()]
            assert int(match.group(1)) == len(huge) - match.start()
            # Linkage, names and other attributes are untouched.
            assert record.name == span.name
            for key in (OPIK_TRACE_ID, OPIK_SPAN_ID, OPIK_PARENT_SPAN_ID):
                assert record.attributes.get(key) == span.attributes.get(key)
            assert record.attributes["gen_ai.request.model"] == "m"
        (row,) = opik.traces()
        assert row.id == root.attributes[OPIK_TRACE_ID]
        assert MARKER.search(row.input["input.value"])  # the trace row was cut too
        assert exporter.stats["spans_truncated"] >= 1
        assert exporter.stats["trace_rows_truncated"] >= 1


def test_max_request_bytes_splits_before_sending(opik, exporters):
    exporter = exporters(opik.url, max_request_bytes=8192, compression=None)
    sent = record_successful_posts(exporter)
    spans = build_spans(60, attributes={"note": "x" * 400})
    assert exporter.export(spans) is SUCCESS
    assert len(sent) > 4
    assert all(len(body) <= 8192 for _, body in sent)
    assert 413 not in [r.status for r in opik.requests]
    assert sorted(delivered_ids(opik)) == sorted(otel_ids(spans))
    assert len(opik.traces()) == 15
    assert exporter.stats["requests_split"] > 0


# ------------------------------------------------------------------------ 3. outages

PREVIOUS_RUN = r"""
    import json, sys
    from opentelemetry.sdk.trace import TracerProvider
    from opik_otel import configure
    from opik_otel.retry import RetryPolicy

    url, spool = sys.argv[1], sys.argv[2]
    provider = TracerProvider()
    tracing = configure(
        url=url, tracer_provider=provider, spool_directory=spool,
        retry_policy=RetryPolicy(max_attempts=1), exit_timeout_millis=3000,
    )
    tracer = provider.get_tracer("previous-run")
    ids = []
    for index in range(30):
        with tracer.start_as_current_span(f"previous-{index}") as span:
            ids.append(format(span.get_span_context().span_id, "016x"))
    print(json.dumps(ids), flush=True)
    # No flush, no shutdown: the interpreter's exit does it.
"""


def test_spool_left_by_a_previous_process_is_replayed_by_the_next(opik, exporters, tmp_path, isolated_opik_settings):
    spool = tmp_path / "shared-spool"
    opik.refuse_connections()
    done = run_python(PREVIOUS_RUN, [opik.url, str(spool)], isolated_env(isolated_opik_settings), timeout=60)
    assert done.returncode == 0, done.stderr
    ids = json.loads(done.stdout)
    assert list(spool.rglob("*.rec")), "the previous run left its spans on disk"
    opik.accept_connections()

    exporter = exporters(opik.url, spool_directory=spool)  # the next run of the app
    assert exporter.force_flush(10_000) is True
    assert sorted(delivered_ids(opik)) == sorted(ids)
    assert len(opik.traces()) == 30 and not opik.orphans()
    assert not list(spool.rglob("*.rec"))


def test_spool_cap_evicts_the_oldest_counts_and_logs_once(opik, exporters, caplog):
    exporter = exporters(opik.url, spool_max_bytes=40_000, compression=None)
    batches = [build_spans(10, minted=False, name=f"b{i}", attributes={"blob": "y" * 1000}) for i in range(20)]
    with caplog.at_level(logging.WARNING, logger="opik_otel"), opik.down():
        for batch in batches:
            assert exporter.export(batch) is SUCCESS
        stats = exporter.stats
        assert stats["spool_dropped_records"] > 0
        assert stats["spool_dropped_bytes"] > 0
        assert stats["spool_bytes"] <= 40_000
    full = records_of(caplog, "opik_otel.spool", "is full")
    assert len(full) == 1  # once, not per eviction
    assert "lost so far" in full[0].getMessage()
    assert exporter.force_flush(10_000) is True
    delivered = set(delivered_ids(opik))
    assert set(otel_ids(batches[-1])) <= delivered  # the newest data stayed
    assert not set(otel_ids(batches[0])) & delivered  # the oldest went first
    assert len(delivered) == 10 * (20 - stats["spool_dropped_records"])


def test_a_spooled_request_opik_cannot_parse_does_not_block_the_spool(opik, exporters, caplog):
    exporter = exporters(opik.url)
    with opik.down():
        # Corrupt protobuf at the head of the spool: Opik answers 500 to it for ever.
        assert exporter.spool.append("otlp", b"\x0a\x05abc", {"projectName": "Default Project"})
        batches = [build_spans(4, name=f"b{i}") for i in range(3)]
        for batch in batches:
            assert exporter.export(batch) is SUCCESS
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        assert exporter.force_flush(20_000) is True
    assert sorted(delivered_ids(opik)) == sorted(i for b in batches for i in otel_ids(b))
    assert exporter.stats["requests_refused"] == 1
    assert len(records_of(caplog, "opik_otel.exporter", "cannot parse")) == 1


def test_a_long_run_of_500s_for_everything_loses_nothing(opik, exporters):
    exporter = exporters(opik.url)
    batches = [build_spans(4, name=f"b{i}") for i in range(3)]
    opik.fail_next(30, 500)  # the export's retries, then many replay attempts
    for batch in batches:
        assert exporter.export(batch) is SUCCESS
    assert exporter.force_flush(20_000) is True
    assert opik.stats["injected_failures"] == 30
    assert sorted(delivered_ids(opik)) == sorted(i for b in batches for i in otel_ids(b))
    assert exporter.stats["requests_refused"] == 0


def test_spool_files_are_private_to_the_user(opik, exporters, tmp_path):
    spool = tmp_path / "private-spool"
    exporter = exporters(opik.url, spool_directory=spool)
    with opik.down():
        assert exporter.export(build_spans(6)) is SUCCESS
        paths = [spool, *spool.rglob("*")]
        assert any(p.suffix == ".rec" for p in paths)
        for path in paths:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        # The API key never reaches the disk either.
        for path in spool.rglob("*.rec"):
            assert b"Authorization" not in path.read_bytes()


def test_without_a_spool_the_loss_is_counted_and_logged_once(opik, exporters, caplog):
    exporter = exporters(opik.url, spool_directory=False)
    with caplog.at_level(logging.WARNING, logger="opik_otel"), opik.down():
        for _ in range(3):
            assert exporter.export(build_spans(4, minted=False)) is FAILURE
    assert exporter.stats["requests_lost"] == 3
    assert len(records_of(caplog, "opik_otel.exporter", "spooling is disabled")) == 1


# ------------------------------------------------------- 4. bounded memory, no blocking


class BlockingExporter(SpanExporter):
    """Blocks every export until released, like a hung network call."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported: List[ReadableSpan] = []
        self.shutdowns = 0

    def export(self, spans):
        self.release.wait(30)
        self.exported.extend(spans)
        return SUCCESS

    def shutdown(self):
        self.shutdowns += 1


def test_full_queue_drops_are_counted_and_logged_once(caplog):
    blocking = BlockingExporter()
    processor = OpikBatchSpanProcessor(blocking, max_queue_size=10, max_export_batch_size=5, schedule_delay_millis=10)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("queue")
    try:
        with caplog.at_level(logging.WARNING, logger="opik_otel"):
            started = time.perf_counter()
            for index in range(300):
                tracer.start_span(f"s{index}").end()
            elapsed = time.perf_counter() - started
        assert elapsed < 1.0  # the app never waited for the hung exporter
        # Exactly max_queue_size wait in the queue; at most one batch (5) is in the hung export.
        assert processor.stats["queued"] == 10
        assert 300 - 10 - 5 <= processor.dropped_spans <= 300 - 10
        logged = records_of(caplog, "opik_otel.batching", "queue is full")
        assert len(logged) == 1
        assert "max_queue_size=10" in logged[0].getMessage()
    finally:
        blocking.release.set()
    assert processor.force_flush(5000) is True
    assert len(blocking.exported) + processor.dropped_spans == 300
    processor.shutdown(1000)


def test_processor_force_flush_and_shutdown_honour_timeouts_with_a_hung_exporter():
    blocking = BlockingExporter()
    processor = OpikBatchSpanProcessor(blocking, schedule_delay_millis=10)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    provider.get_tracer("hung").start_span("s").end()
    started = time.monotonic()
    assert processor.force_flush(300) is False
    assert time.monotonic() - started < 0.3 + SLACK
    started = time.monotonic()
    processor.shutdown(400)
    assert time.monotonic() - started < 0.4 + SLACK
    assert blocking.shutdowns == 1
    blocking.release.set()


@pytest.mark.parametrize("fault", ["refused", "hung"])
def test_force_flush_and_shutdown_honour_timeouts_while_opik_is_down(opik, pipelines, fault):
    tracer, tracing = pipelines(opik.url, timeout=5.0)
    for index in range(20):
        with tracer.start_as_current_span(f"root-{index}"):
            with tracer.start_as_current_span("child"):
                pass
    if fault == "refused":
        opik.refuse_connections()
    else:
        opik.delay(10)  # answers far later than any timeout here
    try:
        with tracer.start_as_current_span("while-down"):
            pass
        started = time.monotonic()
        assert tracing.force_flush(500) is False
        assert time.monotonic() - started < 0.5 + SLACK
        started = time.monotonic()
        tracing.shutdown(700)
        assert time.monotonic() - started < 0.7 + SLACK
    finally:
        opik.delay(0)
        opik.accept_connections()


EXIT_WHILE_DOWN = r"""
    import json, sys
    from opentelemetry.sdk.trace import TracerProvider
    from opik_otel import configure

    url, spool = sys.argv[1], sys.argv[2]
    provider = TracerProvider()
    configure(
        url=url, tracer_provider=provider, spool_directory=spool, timeout=30.0,
        schedule_delay_millis=60_000, exit_timeout_millis=2000,
    )
    tracer = provider.get_tracer("exit")
    ids = []
    for index in range(50):
        with tracer.start_as_current_span(f"exit-{index}") as span:
            ids.append(format(span.get_span_context().span_id, "016x"))
    print(json.dumps(ids), flush=True)
"""


@pytest.mark.parametrize("fault", ["refused", "hung"])
def test_interpreter_exit_never_hangs_while_opik_is_down(opik, exporters, tmp_path, isolated_opik_settings, fault):
    spool = tmp_path / "exit-spool"
    if fault == "refused":
        url = closed_port_url()
        listener = None
    else:
        # Accepts connections (the kernel's backlog) but never answers.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    try:
        started = time.monotonic()
        done = run_python(EXIT_WHILE_DOWN, [url, str(spool)], isolated_env(isolated_opik_settings), timeout=60)
        elapsed = time.monotonic() - started
    finally:
        if listener is not None:
            listener.close()
    assert done.returncode == 0, done.stderr
    # Interpreter start and imports take about a second; the exit flush at most 2 s.
    assert elapsed < 2.0 + 6.0
    ids = json.loads(done.stdout)
    # And nothing was lost: the next run replays the spool into Opik.
    exporter = exporters(opik.url, spool_directory=spool)
    assert exporter.force_flush(10_000) is True
    assert sorted(delivered_ids(opik)) == sorted(ids)
    assert len(opik.traces()) == 50


# ------------------------------------------------------------------------ 5. fork

_FORK_TRACER = None


def _emit(tracer, prefix: str, count: int) -> None:
    for index in range(count):
        with tracer.start_as_current_span(f"{prefix}-{index}"):
            pass


def _multiprocessing_child(prefix: str, count: int) -> None:
    # No flush here: the processor's multiprocessing finalizer flushes at the end.
    _emit(_FORK_TRACER, prefix, count)


def test_forked_children_each_export_their_own_spans_exactly_once(opik, pipelines):
    global _FORK_TRACER
    tracer, tracing = pipelines(opik.url, schedule_delay_millis=200)
    _FORK_TRACER = tracer
    _emit(tracer, "parent-before", 10)  # still queued in the parent at fork time
    expected = [f"parent-before-{i}" for i in range(10)]

    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_multiprocessing_child, args=(f"mp{k}", 15)) for k in range(3)]
    for child in children:
        child.start()
    expected += [f"mp{k}-{i}" for k in range(3) for i in range(15)]
    for k in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                _emit(tracer, f"fork{k}", 15)
                code = 0 if tracing.force_flush(10_000) else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        expected += [f"fork{k}-{i}" for i in range(15)]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    _emit(tracer, "parent-after", 10)
    expected += [f"parent-after-{i}" for i in range(10)]
    assert tracing.force_flush(10_000) is True

    assert opik.wait_for_spans(len(expected), timeout=10)
    assert sorted(s.name for s in opik.spans()) == sorted(expected)  # each exactly once
    assert opik.stats["duplicate_span_ids"] == 0
    assert len(opik.traces()) == len(expected)
    assert not opik.orphans()


def test_forked_children_spool_separately_and_nothing_is_lost(opik, pipelines):
    tracer, tracing = pipelines(opik.url, schedule_delay_millis=50)
    expected = []
    with opik.down():
        _emit(tracer, "parent", 5)
        expected += [f"parent-{i}" for i in range(5)]
        for k in range(3):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                code = 1
                try:
                    _emit(tracer, f"child{k}", 10)
                    # Into this child's own spool directory; the child then dies.
                    code = 0 if tracing.span_processor.force_flush(10_000) else 3
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, f"child {k}"
            expected += [f"child{k}-{i}" for i in range(10)]
        assert tracing.span_processor.force_flush(10_000) is True
        spool_root = Path(tracing.exporter.spool.directory)
        process_dirs = [p for p in spool_root.iterdir() if p.is_dir() and p.name.startswith("p")]
        # The parent and each child wrote their own.
        assert len(process_dirs) == 4, sorted((p.name, sorted(q.name for q in p.iterdir())) for p in spool_root.iterdir())
    # The parent replays its own spool and claims the dead children's.
    assert tracing.force_flush(10_000) is True, tracing.exporter.stats
    assert opik.wait_for_spans(len(expected), timeout=10), (len(opik.spans()), tracing.exporter.stats)
    assert sorted(s.name for s in opik.spans()) == sorted(expected)
    assert opik.stats["duplicate_span_ids"] == 0, (opik.stats, tracing.exporter.stats)
    assert not opik.orphans()


def test_processor_queue_is_not_inherited_by_a_forked_child():
    blocking = BlockingExporter()
    processor = OpikBatchSpanProcessor(blocking, schedule_delay_millis=60_000)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    for index in range(5):
        provider.get_tracer("q").start_span(f"s{index}").end()
    assert processor.queue_size == 5
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write, str(processor.queue_size).encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"0"
    os.close(read)
    os.close(write)
    assert processor.queue_size == 5  # the parent still owns them
    blocking.release.set()
    processor.shutdown(2000)
    assert len(blocking.exported) == 5


# ------------------------------------------------------- 6. bad setup, headers, TLS


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Team": "a\r\nInjected: yes"},
        {"X-Team": "a\nb"},
        {"X-Team": "bell\x07"},
        {"X-Team": "nul\x00"},
        {"X-Team": "\x7f"},
        {"Bad Name": "v"},
        {"X-Team:": "v"},
        {"": "v"},
        {"X-Team": 42},
        {"Content-Length": "10"},
        {"Transfer-Encoding": "chunked"},
        ["not", "a", "mapping"],
    ],
)
def test_unsafe_header_values_are_refused_at_setup(opik, headers):
    with pytest.raises(ConfigurationError):
        OpikExporter(url=opik.url, headers=headers, spool_directory=False)


def test_valid_extra_headers_are_sent(opik, exporters):
    exporter = exporters(opik.url, headers={"X-Team": "search", "X-Trace-Source": "tests"})
    assert exporter.export(build_spans(2, minted=False)) is SUCCESS
    (request,) = opik.requests
    assert request.headers["X-Team"] == "search"


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": float("nan")},
        {"timeout": "10"},
        {"max_request_bytes": 10},
        {"max_request_bytes": 1.5},
        {"spool_max_bytes": 0},
        {"verify": "/no/such/ca-bundle.pem"},
        {"verify": 1},
        {"tags": "one-string"},
        {"tags": [1, 2]},
        {"metadata": ["a"]},
        {"thread_id": ["x"]},
        {"otlp_endpoint": "http://collector:4318/v1/traces\r\n"},
        {"retry_policy": "fast"},
    ],
)
def test_unusable_options_are_configuration_errors(opik, options):
    with pytest.raises(ConfigurationError):
        OpikExporter(url=opik.url, spool_directory=False, **options)


@pytest.mark.parametrize(
    "options",
    [{"max_queue_size": 0}, {"max_export_batch_size": 4096}, {"schedule_delay_millis": -5}, {"exit_timeout_millis": "x"}],
)
def test_unusable_batching_options_are_configuration_errors(opik, options, tmp_path):
    provider = TracerProvider(shutdown_on_exit=False)
    with pytest.raises(ConfigurationError):
        configure(url=opik.url, tracer_provider=provider, spool_directory=tmp_path / "s", **options)
    assert not provider._active_span_processor._span_processors  # nothing half-installed


class _Sink(BaseHTTPRequestHandler):
    bodies: List[bytes] = []

    def do_POST(self):
        _Sink.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _self_signed_certificate(directory: Path):
    """A certificate for 127.0.0.1 and its key, made with ``cryptography`` or ``openssl``."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            capture_output=True,
        ) if _have("openssl") else None
        if openssl is None or openssl.returncode != 0:
            pytest.skip("neither cryptography nor openssl is available to make a certificate")
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, key


def _have(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


@pytest.fixture
def https_sink(tmp_path):
    cert, key = _self_signed_certificate(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _Sink.bodies = []
    yield f"https://127.0.0.1:{server.server_address[1]}/api", cert
    server.shutdown()
    server.server_close()


def test_tls_is_verified_by_default_and_a_ca_bundle_can_be_given(https_sink, exporters, caplog):
    url, cert = https_sink
    spans = build_spans(3, minted=False)

    untrusting = exporters(url)  # verify=True: the self-signed certificate is refused
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        assert untrusting.export(spans) is SUCCESS  # kept in the spool, not sent in clear
    assert _Sink.bodies == []
    assert untrusting.stats["spool_records"] == 1
    assert any("TLS" in r.getMessage() for r in records_of(caplog, "opik_otel.exporter", "certificate"))

    trusting = exporters(url, verify=str(cert))
    assert trusting.export(spans) is SUCCESS
    assert len(_Sink.bodies) == 1
    assert trusting.stats["spool_records"] == 0
