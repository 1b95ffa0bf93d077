"""A script that only ever exports at interpreter exit delivers its spans by its own exit.

Run on every supported Python in CI (it is not an integration module): from 3.12 on, the
interpreter starts no thread once it is exiting, so a sender that is started lazily by the
exit flush must deliver from the exiting thread instead of losing the run's spans.
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    from opentelemetry.sdk.trace import TracerProvider
    import opik_otel

    tracing = opik_otel.configure(
        url=sys.argv[1], project_name="exit-only", tracer_provider=TracerProvider(), spool_directory=sys.argv[2]
    )
    tracer = tracing.tracer_provider.get_tracer("exit-only")
    for index in range(5):
        with tracer.start_as_current_span(f"root-{index}"):
            with tracer.start_as_current_span("child"):
                pass
    # No flush, no shutdown: the exit flush is the first and only export.
    """
)


def test_spans_exported_only_at_exit_are_delivered_by_that_exit(opik, tmp_path):
    script = tmp_path / "exit_only.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), opik.url, str(tmp_path / "queue")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(opik.spans()) == 10
    assert len(opik.traces()) == 5
    assert opik.orphans() == []
