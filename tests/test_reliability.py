"""Issue 5 under fault injection: nothing lost when Opik is down, never in the app's way.

Every rule is exercised for real: spans go over loopback HTTP to ``LocalOpik``, whose
fault injection (refused connections, injected statuses with ``Retry-After``, slow
answers, body-size limits) plays the failing Opik. Backoffs are shortened through the
exporter's ``retry_policy`` / ``replay_policy`` knobs so the whole file runs in seconds.
"""

import faulthandler
import json
import logging
import multiprocessing
import os
import re
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opik_otel import ConfigurationError, OpikExporter, OpikSpanProcessor, configure
from opik_otel.batching import OpikBatchSpanProcessor
from opik_otel.retry import RetryPolicy
from opik_otel.testing import LocalOpik

pytestmark = pytest.mark.usefixtures("isolated_opik_settings")

SUCCESS = SpanExportResult.SUCCESS
FAILURE = SpanExportResult.FAILURE
OTLP_PATH = "/api/v1/private/otel/v1/traces"
TRACES_PATH = "/api/v1/private/traces/batch"
MARKER = re.compile(r"…\[truncated (\d+) bytes by opik_otel\]$")

FAST_RETRY = RetryPolicy(max_attempts=1_000_000, initial_backoff=0.01, max_backoff=0.1, jitter=0.0)
FAST = {"retry_policy": FAST_RETRY, "timeout": 3.0}
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


# ------------------------------------------------------------------ 1. one ordered queue


def test_outage_queues_and_delivers_everything_in_order_without_duplicates(opik, exporters):
    exporter = exporters(opik.url)
    batches = [build_spans(8, name=f"b{index}") for index in range(5)]
    with opik.down():
        for batch in batches:
            assert exporter.export(batch) is SUCCESS  # stored, not delivered
        assert exporter.force_flush(300) is False  # Opik is down: not delivered
        stats = exporter.stats
        assert stats["queue_records"] == 10  # a trace-row record and a span record per batch
        assert stats["requests_quarantined"] == stats["requests_lost"] == 0
    assert exporter.force_flush(10_000) is True
    expected = [span_id for batch in batches for span_id in otel_ids(batch)]
    assert sorted(delivered_ids(opik)) == sorted(expected)
    # Oldest first: the batches reached Opik in the order they were exported.
    order = [span.name.split("-")[0] for span in opik.spans()]
    firsts = [order.index(f"b{index}") for index in range(5)]
    assert firsts == sorted(firsts)
    assert opik.stats["duplicate_span_ids"] == 0
    assert len(opik.traces()) == 10 and not opik.orphans()
    # Trace rows of a batch went before its spans.
    paths = [r.path for r in opik.requests if 200 <= r.status < 300]
    assert paths == [TRACES_PATH, OTLP_PATH] * 5


def test_export_returns_before_any_network_io(exporters):
    # Accepts connections and never answers: export() must not wait for it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        exporter = exporters(f"http://127.0.0.1:{listener.getsockname()[1]}/api", timeout=5.0)
        started = time.monotonic()
        assert exporter.export(build_spans(20)) is SUCCESS
        assert time.monotonic() - started < 0.5
        assert exporter.stats["queue_items"] == 20 + 5  # 20 spans and 5 trace rows wait
    finally:
        listener.close()


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried_with_backoff(opik, exporters, status):
    exporter = exporters(opik.url)
    opik.fail_next(2, status=status)
    assert exporter.export(build_spans(4, minted=False)) is SUCCESS
    assert exporter.force_flush(10_000) is True
    assert opik.stats["injected_failures"] == 2
    assert exporter.stats["requests_retried"] == 2
    assert exporter.stats["queue_records"] == 0
    assert len(opik.spans()) == 4


def test_retry_after_is_honoured(opik, exporters):
    exporter = exporters(opik.url)
    opik.fail_next(1, status=429, retry_after=0.5)
    started = time.monotonic()
    assert exporter.export(build_spans(2, minted=False)) is SUCCESS
    assert exporter.force_flush(10_000) is True
    assert time.monotonic() - started >= 0.45  # waited as asked, not the 10 ms backoff
    assert len(opik.spans()) == 2


@pytest.mark.parametrize(
    "status, advice",
    [(400, "malformed"), (422, "not retried")],
)
def test_requests_refused_for_good_are_quarantined_and_logged_once(opik, exporters, caplog, status, advice):
    exporter = exporters(opik.url)
    opik.fail_next(5, status=status)
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        for index in range(5):
            assert exporter.export(build_spans(2, minted=False, name=f"b{index}")) is SUCCESS
        assert exporter.force_flush(5000) is False  # not accepted: the flush says so
    assert opik.stats["requests_received"] == 5  # one request each: no retry
    assert exporter.stats["requests_quarantined"] == 5
    assert exporter.stats["queue_records"] == 0  # set aside, not kept at the head for ever
    logged = [r for r in records_of(caplog, "opik_otel.exporter", str(status))]
    assert len(logged) == 1 and advice in logged[0].getMessage()
    # The queue moved on: later data is delivered.
    assert exporter.export(build_spans(2, minted=False, name="after")) is SUCCESS
    assert exporter.force_flush(5000) is True


@pytest.mark.parametrize(
    "status, advice",
    [(401, "OPIK_API_KEY"), (403, "OPIK_WORKSPACE"), (404, "OPIK_URL_OVERRIDE"), (405, "OPIK_URL_OVERRIDE")],
)
def test_setup_refusals_keep_the_data_and_say_what_to_fix_once(opik, exporters, caplog, status, advice):
    exporter = exporters(opik.url)
    opik.fail_next(1_000_000, status=status)
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        assert exporter.export(build_spans(2, minted=False)) is SUCCESS
        started = time.monotonic()
        assert exporter.force_flush(10_000) is False  # soon: waiting would not fix it
        assert time.monotonic() - started < 2
    logged = records_of(caplog, "opik_otel.exporter", advice)
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    assert exporter.stats["queue_records"] == 1  # the set-up is wrong, not the data
    # Once the server takes it (the key fixed, the proxy repaired) it is delivered; a
    # refusal of a request already on its way then does not end the flush.
    opik.fail_next(0)
    assert exporter.force_flush(10_000) is True
    assert len(opik.spans()) == 2


def test_real_401_says_to_check_the_api_key_once(exporters, caplog):
    with LocalOpik(api_key="right-key") as server:
        exporter = exporters(server.url, api_key="wrong-key")
        with caplog.at_level(logging.WARNING, logger="opik_otel"):
            for _ in range(3):
                exporter.export(build_spans(2, minted=False))
                assert exporter.force_flush(2000) is False
        logged = records_of(caplog, "opik_otel.exporter", "OPIK_API_KEY")
        assert len(logged) == 1
        assert "wrong-key" not in caplog.text and "right-key" not in caplog.text
        assert server.spans() == []


def test_a_netrc_entry_for_the_opik_host_does_not_replace_the_api_key(exporters, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1\nlogin someone\npassword for-another-tool\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    with LocalOpik(api_key="right-key") as server:
        exporter = exporters(server.url, api_key="right-key")
        assert exporter.export(build_spans(2, minted=False)) is SUCCESS
        assert exporter.force_flush(5000) is True
        assert [r.status for r in server.requests] == [200]


def test_real_404_says_to_check_the_url(opik, exporters, caplog):
    exporter = exporters(opik.url + "/nope")
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        exporter.export(build_spans(2, minted=False))
        assert exporter.force_flush(2000) is False
    (logged,) = records_of(caplog, "opik_otel.exporter", "404")
    assert "OPIK_URL_OVERRIDE" in logged.getMessage() and "/nope" in logged.getMessage()


# ---------------------------------------------------------------------------- 2. size


def test_413_splits_in_halves_recursively_until_accepted(exporters):
    with LocalOpik(max_body_bytes=6_000) as opik:
        exporter = exporters(opik.url, compression=None)
        spans = build_spans(64, minted=False, attributes={"input.text": "x" * 300})
        assert exporter.export(spans) is SUCCESS
        assert exporter.force_flush(20_000) is True
        assert sorted(delivered_ids(opik)) == sorted(otel_ids(spans))
        assert exporter.stats["spans_truncated"] == 0  # splitting sufficed
        assert exporter.stats["requests_split"] >= 4


def test_413_learns_the_limit_so_later_records_are_split_before_sending(exporters):
    with LocalOpik(max_body_bytes=6_000) as opik:
        exporter = exporters(opik.url, compression=None)
        assert exporter.export(build_spans(64, minted=False, attributes={"input.text": "x" * 300})) is SUCCESS
        assert exporter.force_flush(20_000) is True
        refused_before = sum(1 for r in opik.requests if r.status == 413)
        assert exporter.export(build_spans(64, minted=False, attributes={"input.text": "y" * 300})) is SUCCESS
        assert exporter.force_flush(20_000) is True
        refused_after = sum(1 for r in opik.requests if r.status == 413)
        assert refused_after - refused_before <= 1
        assert len(opik.spans()) == 128


@pytest.mark.parametrize("limit", ["max_request_bytes", "413"])
def test_a_single_5mb_span_is_truncated_with_a_marker_never_dropped(exporters, limit):
    big = "A" * (5 * 1024 * 1024)
    options = {"max_request_bytes": 1024 * 1024} if limit == "max_request_bytes" else {}
    with LocalOpik(max_body_bytes=512 * 1024 if limit == "413" else None) as opik:
        exporter = exporters(opik.url, compression=None, **options)
        spans = build_spans(1, attributes={"input.image": big, "output.text": "short"}, children=0)
        assert exporter.export(spans) is SUCCESS
        assert exporter.force_flush(30_000) is True
        (span,) = opik.spans()
        assert span.name == "span-0"
        assert span.otel_span_id == otel_ids(spans)[0]
        value = span.input["input.image"]
        match = MARKER.search(value)
        assert match and len(value) < len(big)
        assert len(value) - len(match.group(0)) + int(match.group(1)) == len(big)
        assert span.output["output.text"] == "short"
        assert exporter.stats["spans_truncated"] >= 1
        (trace,) = opik.traces()
        assert trace.name == "span-0"


@pytest.mark.parametrize(
    "attributes",
    [
        {"input.numbers": tuple(float(i) for i in range(200_000))},
        {"input.words": tuple(f"w{i}" for i in range(200_000))},
        {"input.ints": tuple(range(300_000))},
    ],
    ids=["float-array", "many-short-strings", "int-array"],
)
def test_a_span_too_large_for_any_split_keeps_its_ids_whatever_its_values(exporters, attributes):
    with LocalOpik(max_body_bytes=64 * 1024) as opik:
        exporter = exporters(opik.url, compression=None)
        spans = build_spans(1, attributes=attributes, children=0, minted=False)
        assert exporter.export(spans) is SUCCESS
        assert exporter.force_flush(30_000) is True
        (span,) = opik.spans()
        assert span.name == "span-0" and span.otel_span_id == otel_ids(spans)[0]
        assert any(MARKER.search(str(value)) for value in span.input.values())
        assert exporter.stats["requests_quarantined"] == 0


def test_max_request_bytes_splits_before_sending(opik, exporters):
    exporter = exporters(opik.url, max_request_bytes=8 * 1024, compression=None)
    spans = build_spans(40, minted=False, attributes={"input.text": "z" * 500})
    assert exporter.export(spans) is SUCCESS
    assert exporter.force_flush(10_000) is True
    assert all(r.body_size <= 8 * 1024 for r in opik.requests)
    assert {r.status for r in opik.requests} == {200}
    assert sorted(delivered_ids(opik)) == sorted(otel_ids(spans))
    assert exporter.stats["requests_split"] > 0


# --------------------------------------------------------------------- 3. the disk queue

PREVIOUS_RUN = r"""
    import sys
    from opentelemetry.sdk.trace import TracerProvider
    from opik_otel import configure

    url, spool = sys.argv[1], sys.argv[2]
    provider = TracerProvider()
    tracing = configure(
        url=url, tracer_provider=provider, spool_directory=spool, exit_timeout_millis=500,
    )
    tracer = provider.get_tracer("previous")
    for index in range(6):
        with tracer.start_as_current_span(f"previous-{index}"):
            pass
"""


def test_data_left_by_a_previous_process_is_delivered_by_the_next(opik, exporters, tmp_path, isolated_opik_settings):
    spool = tmp_path / "shared-spool"
    with opik.down():
        done = run_python(PREVIOUS_RUN, [opik.url, str(spool)], isolated_env(isolated_opik_settings), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "wait for the next run in" in done.stderr  # one line: how many, where
    assert [p for p in spool.rglob("*") if p.is_file() and p.stat().st_size > 0], "nothing left on disk"
    exporter = exporters(opik.url, spool_directory=spool)  # the next run of the app
    assert exporter.force_flush(10_000) is True
    assert sorted(s.name for s in opik.spans()) == [f"previous-{i}" for i in range(6)]
    assert len(opik.traces()) == 6


def test_queue_cap_evicts_the_oldest_counts_and_logs_once(opik, exporters, caplog):
    exporter = exporters(opik.url, spool_max_bytes=40_000, compression=None)
    with opik.down(), caplog.at_level(logging.WARNING, logger="opik_otel"):
        for index in range(20):
            exporter.export(build_spans(10, name=f"b{index}", attributes={"input.text": "q" * 200}))
        stats = exporter.stats
        assert stats["queue_dropped_records"] > 0
        assert stats["queue_bytes"] <= 40_000
    assert len([r for r in caplog.records if "is full" in r.getMessage()]) == 1
    assert exporter.force_flush(10_000) is False  # some data was lost since the last flush
    assert exporter.force_flush(10_000) is True  # and nothing since
    # What was kept is delivered, newest data included.
    names = {s.name.split("-")[0] for s in opik.spans()}
    assert "b19" in names and "b0" not in names


def test_a_long_run_of_500s_for_everything_loses_nothing(opik, exporters):
    exporter = exporters(opik.url)
    opik.fail_next(30, status=500)
    for index in range(3):
        assert exporter.export(build_spans(4, name=f"b{index}", minted=False)) is SUCCESS
    assert exporter.force_flush(30_000) is True
    assert opik.stats["injected_failures"] == 30
    assert len(opik.spans()) == 12
    assert exporter.stats["requests_quarantined"] == 0


def test_without_a_spool_the_queue_is_in_memory(opik, exporters, tmp_path):
    exporter = exporters(opik.url, spool_directory=False)
    assert exporter.queue.directory is None
    with opik.down():
        assert exporter.export(build_spans(3, minted=False)) is SUCCESS
        assert exporter.force_flush(200) is False
    assert exporter.force_flush(10_000) is True
    assert len(opik.spans()) == 3
    assert not [p for p in tmp_path.rglob("*") if "opik_otel" in p.name]  # nothing on disk


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
        # The queue held exactly max_queue_size; one batch (5) of it may have gone into the
        # hung export before the loop ended (then 5 wait) or after (then 10 wait), as the
        # worker's wake-up and the loop race.
        assert processor.stats["queued"] in (10, 5)
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
        opik.refuse_connections()
    else:
        opik.delay(30)  # accepts and answers far too late
    try:
        started = time.monotonic()
        done = run_python(EXIT_WHILE_DOWN, [opik.url, str(spool)], isolated_env(isolated_opik_settings), timeout=60)
        elapsed = time.monotonic() - started
    finally:
        opik.delay(0)
        opik.accept_connections()
    assert done.returncode == 0, done.stderr
    # Interpreter start and imports take about a second; the exit flush at most 2 s.
    assert elapsed < 2.0 + 6.0
    assert "wait for the next run in" in done.stderr
    ids = json.loads(done.stdout)
    # Nothing was lost, the request in flight included: the next run delivers it all.
    opik.clear()
    exporter = exporters(opik.url, spool_directory=spool)
    assert exporter.force_flush(20_000) is True
    assert sorted(set(delivered_ids(opik))) == sorted(ids)
    assert len({t.id for t in opik.traces()}) == 50


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
                if tracing.force_flush(10_000):
                    code = 0
                else:  # what the child saw, for the parent's failure report
                    sys.stderr.write(f"fork{k} flush failed: {tracing.exporter.stats}\n")
                    sys.stderr.flush()  # os._exit() flushes nothing
                    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                    code = 3
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
    refused = [(r.path, r.status, r.error) for r in opik.requests if r.status >= 300]
    assert sorted(s.name for s in opik.spans()) == sorted(expected)  # each exactly once
    assert opik.stats["duplicate_span_ids"] == 0
    assert len(opik.traces()) == len(expected), (refused, opik.warnings, tracing.exporter.stats)
    assert not opik.orphans()


# Runs on the default interpreter only (CI time: it forks with live threads). On Python
# 3.9 it once left an orphan in about one run of ten; the likely cause, a first record
# lost to another process's tidying of the queue directory, is fixed and tested in
# test_queue_processes.py.
@pytest.mark.integration
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
                    # Into this child's own queue directory, not delivered; the child then dies.
                    code = 0 if tracing.span_processor.force_flush(500) is False else 3
                    os.kill(os.getpid(), 9)
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == -9, f"child {k}"
            expected += [f"child{k}-{i}" for i in range(10)]
        assert tracing.span_processor.force_flush(1000) is False  # queued, Opik down
        assert tracing.exporter.queue.directory is not None
    # The parent replays its own spool and claims the dead children's.
    assert tracing.force_flush(10_000) is True, tracing.exporter.stats
    assert opik.wait_for_spans(len(expected), timeout=10), (len(opik.spans()), tracing.exporter.stats)
    assert sorted(s.name for s in opik.spans()) == sorted(expected)
    assert opik.stats["duplicate_span_ids"] == 0, (opik.stats, tracing.exporter.stats)
    assert not opik.orphans()


FIRST_EXPORT = textwrap.dedent(
    """
    import sys
    from opentelemetry.sdk.trace import TracerProvider
    from opik_otel import configure
    from opik_otel.testing import LocalOpik

    with LocalOpik() as opik:
        provider = TracerProvider(shutdown_on_exit=False)
        tracing = configure(url=opik.url, tracer_provider=provider, spool_directory=sys.argv[1])
        tracer = provider.get_tracer("first")
        before = set(sys.modules)
        with tracer.start_as_current_span("root"):
            with tracer.start_as_current_span("child"):
                pass
        assert tracing.force_flush(10_000)
        print(sorted(set(sys.modules) - before))
        tracing.shutdown(1000)
    """
)


def test_the_first_export_imports_no_module(tmp_path):
    # A child forked while a parent thread was importing a module waits on that import
    # for ever; the export threads must not import anything late (requests' netrc did).
    completed = subprocess.run(
        [sys.executable, "-c", FIRST_EXPORT, str(tmp_path / "queue")],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


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
    assert exporter.force_flush(5000) is True
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
        assert untrusting.export(spans) is SUCCESS  # kept in the queue, not sent in clear
        assert untrusting.force_flush(1000) is False
    assert _Sink.bodies == []
    assert untrusting.stats["queue_records"] == 1
    assert any("TLS" in r.getMessage() for r in records_of(caplog, "opik_otel.exporter", "certificate"))

    trusting = exporters(url, verify=str(cert))
    assert trusting.export(spans) is SUCCESS
    assert trusting.force_flush(5000) is True
    assert len(_Sink.bodies) == 1
    assert trusting.stats["queue_records"] == 0
