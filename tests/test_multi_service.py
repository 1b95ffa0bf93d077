"""Issue 4, point 3: Opik linkage across real services, with no code change in them.

Every service runs in its own subprocess, talks real HTTP on 127.0.0.1 (ports chosen by
the OS) and exports to one ``LocalOpik`` started by the test. The middle and downstream
services are plain Flask / FastAPI apps run under ``opentelemetry-instrument`` and
configured by environment variables only (``OTEL_TRACES_EXPORTER=opik``,
``OTEL_PROPAGATORS=...``, ``OPIK_*``). Each flow asserts the exact set of spans of each
trace and every span's parent, and that Opik would show no orphan.

- (a) Opik SDK client (``@opik.track`` + ``get_distributed_trace_headers()``) → Flask
  (werkzeug, or wsgiref which comma-joins both header spellings) → requests → Flask,
  and → FastAPI (uvicorn) → httpx → Flask;
- (b) the same chains started by an OTel-first client set up with ``configure()``;
- (c) only ``traceparent`` + W3C ``baggage`` carry the linkage into the chain, with
  ``opik`` / ``opik_baggage`` / neither in the middle and a downstream reading headers
  or only baggage;
- (d) 20 concurrent requests into one asyncio FastAPI process stay in 20 traces;
- (e) the middle service served by gunicorn (default settings, forked sync worker):
  only the hyphenated headers get through; the worker exports each span once.

Services are stopped with SIGINT so that their atexit flush runs. The whole file takes
about 40 s.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import requests

from opik_otel import generate_id
from opik_otel.testing import LocalOpik

pytest.importorskip("opik")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

HERE = Path(__file__).resolve().parent
SERVICES = HERE / "services"
ZERO_CODE = HERE.parent / "examples" / "zero_code"
BIN = Path(sys.executable).parent
INSTRUMENT = BIN / "opentelemetry-instrument"
GUNICORN = BIN / "gunicorn"
PROJECT = "multi-service"
PORT_LINE = re.compile(r"listening on port (\d+)")
GUNICORN_PORT_LINE = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
START_TIMEOUT = 30.0
SPAN_TIMEOUT = 20.0

pytestmark = [
    pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrument is not installed"),
    pytest.mark.timeout(120),
]

# The chain behind the client span, as (span, parent) pairs; "<client>" is the span the
# client made the call from. tool_app.py: "GET /lookup" → "search-index".
TOOL_EDGES = [("GET /lookup", "GET"), ("search-index", "GET /lookup")]
FLASK_MIDDLE_EDGES = [
    ("POST /ask", "<client>"),
    ("plan", "POST /ask"),
    ("GET", "POST /ask"),  # instrumented requests
    *TOOL_EDGES,
]
FASTAPI_MIDDLE_EDGES = [
    ("POST /ask", "<client>"),
    ("POST /ask http receive", "POST /ask"),
    ("plan", "POST /ask"),
    ("GET", "POST /ask"),  # instrumented httpx
    ("POST /ask http send", "POST /ask"),
    ("POST /ask http send", "POST /ask"),
    *TOOL_EDGES,
]
# middle service → (script, the chain's edges, extra environment)
MIDDLES = {
    "flask-werkzeug-requests": ("flow_flask_agent.py", FLASK_MIDDLE_EDGES, {}),
    "flask-wsgiref-requests": ("flow_flask_agent.py", FLASK_MIDDLE_EDGES, {"FLOW_SERVER": "wsgiref"}),
    "fastapi-uvicorn-httpx": ("flow_fastapi_agent.py", FASTAPI_MIDDLE_EDGES, {}),
}


# --------------------------------------------------------------------------- plumbing


@contextlib.contextmanager
def sigint_not_ignored_in_children() -> Iterator[None]:
    """Let the processes started inside see SIGINT even if this one ignores it.

    A shell starts background jobs (``pytest &``, some CI runners) with SIGINT ignored;
    an ignored signal stays ignored across ``exec``, so a Python service would never
    raise KeyboardInterrupt, never run its atexit flush, and be killed with its spans.
    A handled signal is reset to the default on ``exec``, hence the handler here.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not in_main_thread or signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class Service:
    """A subprocess whose output is collected by a thread (so its pipe never fills)."""

    def __init__(self, name: str, command: List[str], env: Dict[str, str], cwd: Optional[Path] = None) -> None:
        self.name = name
        with sigint_not_ignored_in_children():
            self.process = subprocess.Popen(
                command,
                env=env,
                cwd=str(cwd) if cwd else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self._lines: List[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port: Optional[int] = None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._lines.append("")  # end of output
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_for_port(self, pattern: re.Pattern = PORT_LINE, timeout: float = START_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines:
                    match = pattern.search(line)
                    if match:
                        self.port = int(match.group(1))
                        return self.port
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._lines and self._lines[-1] == ""):
                    break
                self._changed.wait(remaining)
        raise AssertionError(f"{self.name} did not start:\n{self.output}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait_stopped(self, timeout: float = 20.0) -> None:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"{self.name} did not stop on its signal:\n{self.output}")
        finally:
            self._reader.join(timeout=5)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class CountingOpik(LocalOpik):
    """``LocalOpik`` that also counts every OTLP delivery of each OTel span.

    The Opik SDK writes each of its spans twice (create, then update: Opik upserts),
    which ``stats["duplicate_span_ids"]`` counts too; an OTel span must arrive once.
    """

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._deliveries: Counter = Counter()
        self._deliveries_lock = threading.Lock()

    def _ingest_otlp(self, request, project, workspace):  # type: ignore[no-untyped-def]
        with self._deliveries_lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self._deliveries[(span.trace_id.hex(), span.span_id.hex())] += 1
        return super()._ingest_otlp(request, project, workspace)

    @property
    def otlp_deliveries(self) -> Counter:
        with self._deliveries_lock:
            return Counter(self._deliveries)


@pytest.fixture
def opik():
    with CountingOpik() as server:
        yield server


def _clean_environ() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPIK_"))}


@pytest.fixture
def client_env(opik, tmp_path):
    """Environment of the client processes: Opik settings, no OTEL_* at all."""
    config = tmp_path / "opik.config"
    config.write_text("")
    home = tmp_path / "home"  # no developer ~/.opik.config; gunicorn's control socket
    home.mkdir()
    return {
        **_clean_environ(),
        "HOME": str(home),
        "OPIK_URL_OVERRIDE": opik.url,
        "OPIK_PROJECT_NAME": PROJECT,
        "OPIK_CONFIG_PATH": str(config),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def zero_code_env(client_env):
    """Environment of a zero-code service: everything comes from these variables."""

    def make(name: str, propagators: str = "tracecontext,baggage,opik", **extra: str) -> Dict[str, str]:
        return {
            **client_env,
            "OTEL_SERVICE_NAME": name,
            "OTEL_TRACES_EXPORTER": "opik",
            "OTEL_PROPAGATORS": propagators,
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            **extra,
        }

    return make


@pytest.fixture
def services():
    """Start services; all are stopped with SIGINT (and killed if need be) at the end."""
    started: List[Service] = []

    class Services:
        def start(
            self,
            name: str,
            command: List[str],
            env: Dict[str, str],
            cwd: Optional[Path] = None,
            pattern: re.Pattern = PORT_LINE,
        ) -> Service:
            service = Service(name, command, env, cwd)
            started.append(service)
            service.wait_for_port(pattern)
            return service

        def zero_code(self, name: str, script: Path, env: Dict[str, str]) -> Service:
            return self.start(name, [str(INSTRUMENT), sys.executable, str(script)], env)

        def stop_all(self, signals: Optional[Dict[str, int]] = None) -> Dict[str, str]:
            """SIGINT every service at once (or ``signals[name]``), wait for each; return their outputs."""
            for service in started:
                service.interrupt((signals or {}).get(service.name, signal.SIGINT))
            for service in started:
                service.wait_stopped()
            return {service.name: service.output for service in started}

    try:
        yield Services()
    finally:
        for service in started:
            service.kill()


def run_client(script: str, *args: str, env: Dict[str, str]) -> dict:
    completed = subprocess.run(
        [sys.executable, str(SERVICES / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, f"{script} failed:\n{completed.stdout}\n{completed.stderr}"
    return json.loads(completed.stdout.strip().splitlines()[-1])


def assert_clean_exit(outputs: Dict[str, str]) -> None:
    for name, output in outputs.items():
        for marker in ("Exception while exporting", "Failed to export", "Could not"):
            assert marker not in output, f"{name}:\n{output}"


# --------------------------------------------------------------------------- checks


def edges(opik: LocalOpik, trace_id: str, client_span_id: Optional[str] = None) -> List[Tuple[str, Optional[str]]]:
    """The trace's spans as sorted (name, parent name) pairs; the client span reads "<client>"."""
    spans = opik.spans(trace_id=trace_id)
    names = {span.id: ("<client>" if span.id == client_span_id else span.name) for span in spans}
    return sorted(
        (names[span.id], None if span.parent_span_id is None else names.get(span.parent_span_id, "<missing>"))
        for span in spans
    )


def client_edges(
    root: str, chain: List[Tuple[str, str]], call: Optional[str] = None
) -> List[Tuple[str, Optional[str]]]:
    """Expected pairs: the client's own span(s) on top of ``chain``."""
    top = [("<client>", None)] if call is None else [(root, None), ("<client>", root)]
    return sorted(top + list(chain))


def assert_one_clean_trace(
    opik: CountingOpik, client: dict, expected: List[Tuple[str, Optional[str]]], trace_name: str
) -> None:
    trees = opik.trees()
    trace_id = client["trace_id"]
    assert [t.id for t in opik.traces()] == [trace_id], trees
    assert opik.traces()[0].name == trace_name, trees
    assert edges(opik, trace_id, client["span_id"]) == expected, trees
    assert len(opik.spans()) == len(expected), trees  # nothing landed in another trace
    assert opik.orphans() == [], trees
    assert_each_otel_span_once(opik)
    assert opik.projects() == [PROJECT], trees


def assert_each_otel_span_once(opik: CountingOpik) -> None:
    """Every OTel span Opik stored arrived exactly once (no fork or exit double export)."""
    otel_spans = [s for s in opik.spans() if s.source == "otel"]
    deliveries = opik.otlp_deliveries
    assert sorted(deliveries) == sorted((s.otel_trace_id, s.otel_span_id) for s in otel_spans)
    assert set(deliveries.values()) <= {1}, opik.trees()


# --------------------------------------------------------------------------- flows


def start_chain(services, zero_code_env, middle: str, middle_propagators: str = "tracecontext,baggage,opik",
                tool_propagators: str = "tracecontext,baggage,opik") -> Service:
    tool = services.zero_code("tool", ZERO_CODE / "tool_app.py", zero_code_env("tool", tool_propagators))
    script, _, extra = MIDDLES[middle]
    return services.zero_code(
        "agent", SERVICES / script, zero_code_env("agent", middle_propagators, TOOL_URL=tool.url, **extra)
    )


# (a): middle → (the client adds the hyphenated copies?, Opik header names the app sees)
# werkzeug keeps only hyphenated names, so that client adds them as the README says;
# uvicorn keeps the Opik SDK's own underscore headers; wsgiref keeps both spellings and
# comma-joins them into one value ("<id>,<id>"), which extraction must read.
SDK_CLIENT_CASES = {
    "flask-werkzeug-requests": (True, ["opik-parent-span-id", "opik-trace-id"]),
    "flask-wsgiref-requests": (True, ["opik-parent-span-id", "opik-trace-id"]),
    "fastapi-uvicorn-httpx": (False, ["opik_parent_span_id", "opik_trace_id"]),
}


@pytest.mark.parametrize("middle", list(MIDDLES))
def test_a_opik_sdk_client_through_two_zero_code_services(opik, services, zero_code_env, client_env, middle):
    """(a) Opik SDK client → zero-code middle → requests/httpx → zero-code tool: one trace."""
    agent = start_chain(services, zero_code_env, middle)
    hyphenated, seen = SDK_CLIENT_CASES[middle]
    client = run_client("flow_sdk_client.py", agent.url, *(["--hyphenated"] if hyphenated else []), env=client_env)
    assert ("opik-trace-id" in client["headers"]) is hyphenated
    assert client["reply"]["seen"] == seen
    if "wsgiref" in middle:
        assert client["reply"]["trace_id_header"] == f"{client['trace_id']},{client['trace_id']}"
    expected = client_edges("sdk-client", MIDDLES[middle][1])
    assert opik.wait_for_spans(len(expected), timeout=SPAN_TIMEOUT), opik.trees()
    assert_clean_exit(services.stop_all())
    assert_one_clean_trace(opik, client, expected, "sdk-client")


@pytest.mark.parametrize("middle", list(MIDDLES))
def test_b_otel_first_client_through_two_zero_code_services(opik, services, zero_code_env, client_env, middle):
    """(b) the same chains started by an OTel-first client under ``configure()``."""
    agent = start_chain(services, zero_code_env, middle)
    client = run_client("flow_otel_client.py", agent.url, "opik-headers", env=client_env)
    assert client["flushed"] is True
    chain = MIDDLES[middle][1]
    expected = client_edges("otel-client", chain, call="call-agent")
    assert opik.wait_for_spans(len(expected), timeout=SPAN_TIMEOUT), opik.trees()
    assert_clean_exit(services.stop_all())
    assert_one_clean_trace(opik, client, expected, "otel-client")


# (c): (middle's propagators, tool's propagators, the tool server span's parent).
# The tool reads only W3C baggage unless it lists "opik". "opik" and "opik_baggage" both
# rewrite the opik.* entries of the baggage they forward with the calling span's linkage;
# without an opik propagator the client's entries go on unchanged, so a tool that reads
# only baggage lands under the client.
BAGGAGE_CASES = {
    "opik_baggage-then-baggage-only": ("tracecontext,baggage,opik_baggage", "tracecontext,baggage", "GET"),
    "opik-then-opik": ("tracecontext,baggage,opik", "tracecontext,baggage,opik", "GET"),
    "opik-then-baggage-only": ("tracecontext,baggage,opik", "tracecontext,baggage", "GET"),
    "baggage-only-then-baggage-only": ("tracecontext,baggage", "tracecontext,baggage", "<client>"),
}


@pytest.mark.parametrize(
    "middle, case",
    [("flask-werkzeug-requests", case) for case in BAGGAGE_CASES]
    + [("fastapi-uvicorn-httpx", "opik_baggage-then-baggage-only")],
)
def test_c_only_traceparent_and_baggage_carry_the_linkage(opik, services, zero_code_env, client_env, middle, case):
    """(c) the client sends ``traceparent`` + ``baggage`` only; the middle links and passes it on.

    The middle joins through the baggage entries whatever its propagators (the
    processor reads baggage). What reaches the tool decides the tool's parent: Opik
    headers (``opik``) or rewritten baggage (``opik_baggage``) name the middle's call
    span; the client's baggage forwarded untouched names the client's span, so the
    tool's spans stay in the trace but hang under the client: the reason for
    ``opik_baggage`` in front of services that read only baggage.
    """
    middle_propagators, tool_propagators, tool_parent = BAGGAGE_CASES[case]
    agent = start_chain(services, zero_code_env, middle, middle_propagators, tool_propagators)
    client = run_client("flow_otel_client.py", agent.url, "baggage", env=client_env)
    assert sorted(client["headers"]) == ["baggage", "traceparent"]
    assert client["reply"]["seen"] == []
    assert f"opik.trace_id={client['trace_id']}" in client["reply"]["baggage"]
    assert f"opik.span_id={client['span_id']}" in client["reply"]["baggage"]
    chain = [(name, tool_parent if name == "GET /lookup" else parent) for name, parent in MIDDLES[middle][1]]
    expected = client_edges("otel-client", chain, call="call-agent")
    assert opik.wait_for_spans(len(expected), timeout=SPAN_TIMEOUT), opik.trees()
    assert_clean_exit(services.stop_all())
    assert_one_clean_trace(opik, client, expected, "otel-client")


def write_upstream_traces(opik: LocalOpik, upstream: List[Tuple[str, str]]) -> None:
    """Trace rows and parent spans of upstream services (as the Opik SDK writes them)."""
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    common = {"project_name": PROJECT, "start_time": now}
    traces = [{**common, "id": t, "name": f"upstream-{i}"} for i, (t, _) in enumerate(upstream)]
    spans = [
        {**common, "id": s, "trace_id": t, "name": f"upstream-{i}", "type": "general"}
        for i, (t, s) in enumerate(upstream)
    ]
    for path, body in (("traces", {"traces": traces}), ("spans", {"spans": spans})):
        requests.post(f"{opik.url}/v1/private/{path}/batch", json=body, timeout=10).raise_for_status()


ASYNC_EDGES = [
    ("GET /work/{n}", "<client>"),
    ("step-a", "GET /work/{n}"),
    ("GET", "GET /work/{n}"),  # instrumented httpx, to /echo in the same process
    ("GET /echo", "GET"),
    ("GET /echo http send", "GET /echo"),
    ("GET /echo http send", "GET /echo"),
    ("step-b", "GET /work/{n}"),
    ("GET /work/{n} http send", "GET /work/{n}"),
    ("GET /work/{n} http send", "GET /work/{n}"),
]


def max_overlap(intervals: List[Tuple[int, int]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


def test_d_concurrent_requests_in_one_asyncio_process_never_cross_link(opik, services, zero_code_env):
    """(d) 20 requests at once into one uvicorn event loop: 20 traces, each exactly its own spans."""
    count = 20
    app = services.zero_code("async", SERVICES / "flow_async_app.py", zero_code_env("async"))
    upstream = [(generate_id(), generate_id()) for _ in range(count)]
    write_upstream_traces(opik, upstream)
    barrier = threading.Barrier(count)

    def call(n: int) -> dict:
        trace_id, parent = upstream[n]
        sep = "-" if n % 2 else "_"  # both spellings: uvicorn keeps underscores
        headers = {f"opik{sep}trace{sep}id": trace_id, f"opik{sep}parent{sep}span{sep}id": parent}
        barrier.wait(timeout=30)
        response = requests.get(f"{app.url}/work/{n}", headers=headers, timeout=30)
        response.raise_for_status()
        return response.json()

    with ThreadPoolExecutor(count) as pool:
        replies = list(pool.map(call, range(count)))
    per_trace = len(ASYNC_EDGES) + 1
    assert opik.wait_for_spans(count * per_trace, timeout=SPAN_TIMEOUT), opik.trees()
    assert_clean_exit(services.stop_all())

    trees = opik.trees()
    assert sorted(t.id for t in opik.traces()) == sorted(t for t, _ in upstream), trees
    assert len(opik.spans()) == count * per_trace, trees
    assert opik.orphans() == [], trees
    assert_each_otel_span_once(opik)
    servers = []
    for n, (trace_id, parent) in enumerate(upstream):
        assert edges(opik, trace_id, parent) == sorted([("<client>", None), *ASYNC_EDGES]), opik.tree(trace_id)
        spans = {span.name: span for span in opik.spans(trace_id=trace_id)}
        # Each span of the trace really belongs to request n.
        assert spans["step-a"].attributes["input.n"] == n, opik.tree(trace_id)
        assert spans["step-b"].attributes["input.n"] == n, opik.tree(trace_id)
        assert any(str(v).endswith(f"/work/{n}") for v in spans["GET /work/{n}"].attributes.values())
        assert any(str(v).endswith(f"?n={n}") for v in spans["GET /echo"].attributes.values())
        # The instrumented httpx call carried request n's linkage, naming its own span.
        echoed = replies[n]["echo"]
        assert replies[n]["n"] == echoed["n"] == n
        for name in ("opik_trace_id", "opik-trace-id"):
            assert echoed["headers"][name] == trace_id
        for name in ("opik_parent_span_id", "opik-parent-span-id"):
            assert echoed["headers"][name] == spans["GET"].id
        server = spans["GET /work/{n}"]
        servers.append((server.start_time_unix_nano, server.end_time_unix_nano))
    # The requests really were served concurrently, their tasks interleaved.
    assert max_overlap(servers) >= 5, servers


@pytest.mark.parametrize(
    "export, stop_signal",
    [
        ("while-running", signal.SIGINT),
        ("at-worker-exit", signal.SIGINT),  # gunicorn's quick shutdown (SIGQUIT to workers)
        ("at-worker-exit", signal.SIGTERM),  # graceful: docker stop, Kubernetes
    ],
    ids=["while-running", "at-worker-exit-sigint", "at-worker-exit-sigterm"],
)
def test_e_gunicorn_default_settings_middle_still_one_trace(
    opik, services, zero_code_env, client_env, export, stop_signal
):
    """(e) the middle service under gunicorn (default sync worker, forked after the SDK set-up).

    gunicorn drops ``opik_trace_id``: a request carrying only the Opik SDK's underscore
    headers does not link there, the same request plus the hyphenated copies does. The
    worker, forked after opentelemetry-instrument set the SDK up in the master, exports
    its spans exactly once: from its own batch thread while it runs, or (schedule delay
    of a minute) from its exit flush when gunicorn stops it, quickly or gracefully.
    """
    if not GUNICORN.exists():
        pytest.skip("gunicorn is not installed")
    delay = {"while-running": "100", "at-worker-exit": "60000"}[export]
    tool = services.zero_code("tool", ZERO_CODE / "tool_app.py", zero_code_env("tool"))
    agent = services.start(
        "agent (gunicorn)",
        [str(INSTRUMENT), str(GUNICORN), "-b", "127.0.0.1:0", "flow_flask_agent:app"],
        zero_code_env("agent", TOOL_URL=tool.url, OTEL_BSP_SCHEDULE_DELAY=delay),
        cwd=SERVICES,
        pattern=GUNICORN_PORT_LINE,
    )

    linked = run_client("flow_sdk_client.py", agent.url, "--hyphenated", env=client_env)
    assert linked["reply"]["pid"] != agent.process.pid  # served by a forked worker
    assert linked["reply"]["seen"] == ["opik-parent-span-id", "opik-trace-id"]  # underscores dropped
    linked_expected = client_edges("sdk-client", FLASK_MIDDLE_EDGES)
    agent_spans = {"POST /ask", "plan", "GET"}
    if export == "while-running":
        assert opik.wait_for_spans(len(linked_expected), timeout=SPAN_TIMEOUT), opik.trees()
        assert edges(opik, linked["trace_id"], linked["span_id"]) == linked_expected, opik.trees()
    else:
        assert opik.wait_for_spans(len(linked_expected) - len(agent_spans), timeout=SPAN_TIMEOUT), opik.trees()
        assert not agent_spans & {span.name for span in opik.spans()}, opik.trees()

    dropped = run_client("flow_sdk_client.py", agent.url, env=client_env)
    assert sorted(dropped["headers"]) == ["opik_parent_span_id", "opik_trace_id"]
    assert dropped["reply"]["seen"] == []  # gunicorn dropped both headers
    unlinked_chain = [(name, None if parent == "<client>" else parent) for name, parent in FLASK_MIDDLE_EDGES]
    total = len(linked_expected) + 1 + len(unlinked_chain)
    if export == "while-running":
        assert opik.wait_for_spans(total, timeout=SPAN_TIMEOUT), opik.trees()
    assert_clean_exit(services.stop_all({agent.name: stop_signal}))
    assert opik.wait_for_spans(total, timeout=SPAN_TIMEOUT), opik.trees()

    trees = opik.trees()
    traces = {t.id: t for t in opik.traces()}
    assert len(traces) == 3, trees
    assert edges(opik, linked["trace_id"], linked["span_id"]) == linked_expected, trees
    # The underscore-only request: the Opik SDK's trace holds its own span only ...
    assert edges(opik, dropped["trace_id"], dropped["span_id"]) == [("<client>", None)], trees
    # ... and the chain forms a trace of its own, rooted at the gunicorn server span.
    (other,) = set(traces) - {linked["trace_id"], dropped["trace_id"]}
    assert traces[other].name == "POST /ask", trees
    assert edges(opik, other) == sorted(unlinked_chain), trees
    assert len(opik.spans()) == total, trees
    assert opik.orphans() == [], trees
    assert_each_otel_span_once(opik)
