"""Every example runs end to end against an embedded LocalOpik and finds no orphans."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def clean_env() -> dict:
    return {key: value for key, value in os.environ.items() if not key.startswith(("OPIK_", "OTEL_"))}


def run_example(name: str, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**clean_env(), **extra_env}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "name, expected_tree",
    [
        ("manual_bridging.py", ["- ask", "  - answer", "    - retrieve", "    - generate"]),
        ("otel_client_sdk_server.py", ["- pipeline", "  - summarize"]),
        ("sdk_client_otel_server.py", ["- answer-question", "  - search", "    - vector-lookup"]),
        ("library_spans_in_track.py", ["- travel-assistant", "  - agent run", "    - chat gpt-4o"]),
    ],
)
def test_example_links_every_span_into_one_trace(name, expected_tree):
    pytest.importorskip("opik")
    result = run_example(name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 1 trace(s)" in result.stdout
    # The tree as printed, without the short ids: each span indented under its parent.
    lines = [line.split(" (..")[0] for line in result.stdout.splitlines()]
    expected = ["  " + line for line in expected_tree]
    first = lines.index(expected[0])
    assert lines[first : first + len(expected)] == expected


def test_distributed_demo_prints_one_clean_trace_per_request():
    pytest.importorskip("opik")
    result = run_example("distributed_demo.py", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 4 traces, 26 spans" in result.stdout
    assert "OK: the span_filter='llm' trace keeps only its root and LLM span, no orphans." in result.stdout
    assert "FAIL" not in result.stdout


def test_distributed_demo_sends_to_the_configured_opik_instead():
    pytest.importorskip("opik")
    from opik_otel.testing import LocalOpik

    with LocalOpik() as configured:
        result = run_example("distributed_demo.py", timeout=180, OPIK_URL_OVERRIDE=configured.url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "embedded LocalOpik" not in result.stdout
        assert configured.wait_for_spans(28, timeout=20)
        assert sorted(t.name for t in configured.traces()) == [
            "POST /ask",
            "agent: other project",
            "filtered: answer question",
            "otel-client: nightly report",
            "sdk-client: user question",
        ]
        assert {t.project_name for t in configured.traces() if t.name == "agent: other project"} == {
            "opik-otel-demo-agents"
        }
        assert [t.name for t in configured.traces("opik-otel-demo-filtered")] == ["filtered: answer question"]
        assert configured.orphans() == []


def test_distributed_demo_fails_in_one_line_when_the_configured_opik_is_unreachable():
    from opik_otel.testing import LocalOpik

    with LocalOpik() as gone:
        url = gone.url
    result = run_example("distributed_demo.py", timeout=60, OPIK_URL_OVERRIDE=url)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"FAIL: cannot reach Opik at {url} (ConnectionError): start it, or fix OPIK_URL_OVERRIDE."
    ]


def test_distributed_demo_fails_when_the_configured_opik_accepts_nothing():
    pytest.importorskip("opik")
    from opik_otel.testing import LocalOpik

    with LocalOpik(api_key="the-right-key") as refusing:  # the demo sends no key: 401
        result = run_example("distributed_demo.py", timeout=180, OPIK_URL_OVERRIDE=refusing.url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"FAIL: Opik at {refusing.url} accepted none of the spans: "
        "check the URL, OPIK_API_KEY and OPIK_WORKSPACE."
    )


@pytest.mark.parametrize(
    "name, expected",
    [
        ("span_filter.py", ["  - handle request", "    - chat gpt-4o", "      - search tool"]),
        ("masking.py", ["'http.request.header.authorization': '[REDACTED by opik_otel]'", "<email>", "'prompt_tokens': 12"]),
        ("trace_attributes.py", ["turn 0: thread=conversation-7 tags=['my-service', 'beta'] user=user-42"]),
        ("sampling.py", ["of 40 traces kept"]),
    ],
)
def test_shaping_examples(name, expected):
    result = run_example(name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: " in result.stdout and "FAIL" not in result.stdout
    lines = [line.split(" (..")[0] for line in result.stdout.splitlines()]
    text = "\n".join(lines)
    for piece in expected:
        assert piece in text, result.stdout
    if name == "span_filter.py":
        assert "SELECT documents" not in text and "POST /v1/chat" not in text
