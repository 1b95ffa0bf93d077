"""Plumbing shared by the examples: where to send traces, and services as subprocesses.

With ``OPIK_URL_OVERRIDE`` set, the examples send to that Opik. Without it they start an
embedded :class:`~opik_otel.testing.LocalOpik` and point every process at it, then print
the trace trees it received and fail if any span is orphaned.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Iterator, List, Optional

import requests

from opik_otel.testing import LocalOpik

READY_PREFIX = "listening on port "


@contextlib.contextmanager
def opik_target(project_name: str) -> Iterator[Optional[LocalOpik]]:
    """Yield the embedded LocalOpik, or ``None`` when a real Opik is configured.

    The settings go into ``os.environ`` so that this process and every service it
    starts (they inherit the environment) send to the same place.
    """
    os.environ.setdefault("OPIK_PROJECT_NAME", project_name)
    url = os.environ.get("OPIK_URL_OVERRIDE")
    if url:
        problem = unreachable(url)
        if problem:
            sys.exit(f"FAIL: cannot reach Opik at {url} ({problem}): start it, or fix OPIK_URL_OVERRIDE.")
        print(f"Sending traces to {url} (project {os.environ['OPIK_PROJECT_NAME']!r})")
        yield None
        return
    with LocalOpik() as local:
        os.environ["OPIK_URL_OVERRIDE"] = local.url
        print(f"No Opik configured: using an embedded LocalOpik at {local.url}")
        yield local


def unreachable(url: str) -> Optional[str]:
    """Why Opik's health check at ``url`` did not answer, or ``None`` when it did."""
    try:
        requests.get(f"{url.rstrip('/')}/is-alive/ping", timeout=5)
    except requests.RequestException as exc:
        return type(exc).__name__
    return None


@contextlib.contextmanager
def sigint_reaches_children() -> Iterator[None]:
    """Let processes started inside handle SIGINT even if this one ignores it.

    Shells start background jobs (``cmd &``, some CI runners) with SIGINT ignored, and
    an ignored signal stays ignored across ``exec``: the services would never run their
    exit flush. A handled signal is reset to the default on ``exec``.
    """
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        yield


class Service:
    """A service running in a subprocess that reports its port on its first line."""

    def __init__(self, name: str, command: List[str], env: Optional[Dict[str, str]] = None) -> None:
        self.name = name
        print(f"  starting {name} ...", end="", flush=True)
        started = time.monotonic()
        with sigint_reaches_children():
            self.process = subprocess.Popen(
                command,
                env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.output: List[str] = []
        self.port = self._wait_for_port(timeout=60)
        print(f" ready on port {self.port} ({time.monotonic() - started:.1f} s)")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_for_port(self, timeout: float) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith(READY_PREFIX):
                return int(line[len(READY_PREFIX) :])
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{''.join(self.output)}")

    def stop(self) -> str:
        """Stop the service gracefully (so it flushes its spans) and return its output."""
        if self.process.poll() is None:
            # SIGINT ends a Python program through KeyboardInterrupt, so atexit hooks
            # (the SDK's flush among them) run; SIGTERM's default would skip them.
            self.process.send_signal(signal.SIGINT)
            try:
                rest, _ = self.process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                rest, _ = self.process.communicate()
            self.output.append(rest or "")
        return "".join(self.output)


def python_service(name: str, script: str, *args: str, env: Optional[Dict[str, str]] = None) -> Service:
    return Service(name, [sys.executable, script, *args], env)


def serve(app, on_shutdown=None) -> None:  # type: ignore[no-untyped-def]
    """Serve a WSGI app on a free loopback port until SIGTERM, then run ``on_shutdown``."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    # Leave serve_forever() through an exception so the finally block (and atexit) flush.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{READY_PREFIX}{server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        if on_shutdown is not None:
            on_shutdown()


def report(local: Optional[LocalOpik], expected_traces: int, timeout: float = 20.0) -> int:
    """Print the traces LocalOpik holds; return 1 if any span is orphaned or a trace is missing."""
    if local is None:
        print("Traces sent; open your Opik project to see them.")
        return 0
    local.wait_for_traces(expected_traces, timeout=timeout)
    print()
    print(local.trees())
    orphans = local.orphans()
    traces = local.traces()
    problems = []
    if len(traces) != expected_traces:
        problems.append(f"expected {expected_traces} trace(s), Opik would show {len(traces)}")
    if orphans:
        problems.append(f"{len(orphans)} orphaned span(s): {', '.join(sorted(s.name for s in orphans))}")
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print(f"OK: {len(traces)} trace(s), {len(local.spans())} span(s), no orphans.")
    return 1 if problems else 0
