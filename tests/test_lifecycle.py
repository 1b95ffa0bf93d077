"""Issue 8: short-lived programs across an outage, and death at any moment after hand-off.

Every test runs real Python subprocesses against a real ``LocalOpik`` over loopback.
The queue lives at its default private location (``$XDG_CACHE_HOME`` points into the
test's temporary directory), so these runs also prove that a later run finds what an
earlier one left.
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

import pytest

from opik_otel.testing import LocalOpik

pytestmark = pytest.mark.usefixtures("isolated_opik_settings")

PROGRAM = r"""
    import sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    mode, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "instrument":
        tracer = trace.get_tracer("lifecycle")  # opentelemetry-instrument set everything up
    elif mode == "sdk-bsp":
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opik_otel import OpikExporter

        provider = TracerProvider()
        from opik_otel.flushing import add_delivery_flush

        provider.add_span_processor(BatchSpanProcessor(OpikExporter()))
        add_delivery_flush(provider)  # the exporter adds it to the global provider at its first export
        trace.set_tracer_provider(provider)
        tracer = provider.get_tracer("lifecycle")
    else:
        from opik_otel import configure

        provider = TracerProvider()
        tracing = configure(tracer_provider=provider, exit_timeout_millis=5000)
        tracer = provider.get_tracer("lifecycle")
    for index in range(count):
        with tracer.start_as_current_span(f"{prefix}-{index}"):
            with tracer.start_as_current_span(f"{prefix}-{index}-child"):
                pass
    if mode == "tracing-flush":
        print("flushed", tracing.force_flush(5000), flush=True)
    elif mode == "sdk-bsp":
        print("flushed", provider.force_flush(5000), flush=True)
        provider.shutdown()
    elif mode == "provider-shutdown":
        provider.shutdown()
    elif mode == "sigkill":
        tracing.span_processor.force_flush(300)  # handed over to the exporter: stored
        print("handed", flush=True)
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    # "exit", "instrument": nothing; the interpreter's exit flushes.
"""


def environment(opik: LocalOpik, home: Path, mode: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPIK_", "OTEL_"))}
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / "cache"),
        OPIK_URL_OVERRIDE=opik.url,
        OPIK_PROJECT_NAME="lifecycle",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]),
    )
    if mode == "instrument":
        env.update(
            OTEL_TRACES_EXPORTER="opik",
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            OTEL_PYTHON_DISTRO="opik-test-no-such-distro",
            OTEL_PYTHON_CONFIGURATOR="opik-test-no-such-configurator",
        )
    return env


def run(opik: LocalOpik, home: Path, mode: str, prefix: str, count: int = 20) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", textwrap.dedent(PROGRAM), mode, prefix, str(count)]
    if mode == "instrument":
        instrument = Path(sys.executable).parent / "opentelemetry-instrument"
        if not instrument.exists():
            pytest.skip("opentelemetry-instrument is not installed")
        script = home / "program.py"
        script.write_text(textwrap.dedent(PROGRAM))
        command = [str(instrument), sys.executable, str(script), mode, prefix, str(count)]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, env=environment(opik, home, mode))


def names(prefix: str, count: int = 20):
    return sorted([f"{prefix}-{i}" for i in range(count)] + [f"{prefix}-{i}-child" for i in range(count)])


@pytest.mark.parametrize("mode", ["exit", "tracing-flush", "provider-shutdown", "sdk-bsp", "instrument"])
def test_a_program_run_across_an_outage_delivers_each_runs_spans_by_its_own_exit(tmp_path, mode):
    home = tmp_path / "home"  # made by isolated_opik_settings
    with LocalOpik() as opik:
        with opik.down():
            first = run(opik, home, mode, "first")
        assert first.returncode == 0, first.stderr
        assert opik.spans() == []
        assert "wait for the next run in" in first.stderr, first.stderr  # one line: how many, where
        if mode in ("tracing-flush", "sdk-bsp"):
            assert "flushed False" in first.stdout  # while down, the flush says so

        second = run(opik, home, mode, "second")
        assert second.returncode == 0, second.stderr
        if mode in ("tracing-flush", "sdk-bsp"):
            assert "flushed True" in second.stdout, second.stdout
        # By the second run's own end: its spans and the first run's, each once.
        delivered = sorted(s.name for s in opik.spans())
        assert delivered == sorted(names("first") + names("second")), second.stderr
        assert opik.stats["duplicate_span_ids"] == 0
        assert not opik.orphans()
        assert "wait for the next run" not in second.stderr


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_sigkill_at_any_moment_after_hand_off_loses_nothing(tmp_path, delay):
    home = tmp_path / "home"  # made by isolated_opik_settings
    with LocalOpik() as opik:
        # Slow answers: the kill lands while a request is in flight or queued.
        opik.delay(delay)
        killed = run(opik, home, "sigkill", "killed", count=50)
        assert killed.returncode == -signal.SIGKILL
        assert "handed" in killed.stdout
        opik.delay(0)
        after = run(opik, home, "exit", "after", count=1)
        assert after.returncode == 0, after.stderr
        delivered = {s.name for s in opik.spans()}
        assert delivered == set(names("killed", 50)) | set(names("after", 1)), after.stderr
