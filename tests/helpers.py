"""Small checks shared by several test modules."""

import contextlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest


def is_canonical_v7(value: Any) -> bool:
    """Whether ``value`` is a UUIDv7 string in the canonical lower-case hyphenated form."""
    if not isinstance(value, str):
        return False
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return parsed.version == 7 and str(parsed) == value


if sys.version_info >= (3, 10):
    from importlib.metadata import entry_points
else:  # 3.9's entry_points() takes no group/name; OTel's API depends on the backport
    from importlib_metadata import entry_points

__all__ = ["app_env", "entry_points", "is_canonical_v7", "needs_current_otel_encoder"]


SERVICE_PROJECT = "svc-project"


def app_env(opik: Any, tmp_path: Any, name: str, project: str = SERVICE_PROJECT) -> dict:
    """Environment of a service subprocess writing to ``opik``: no developer OPIK_*/OTEL_*
    settings or ~/.opik.config, its own spool directory, ``project`` configured."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPIK_", "OTEL_"))}
    home = tmp_path / f"home-{name}"
    home.mkdir(exist_ok=True)
    env.update(
        OPIK_URL_OVERRIDE=opik.url,
        OPIK_PROJECT_NAME=project,
        OPIK_WORKSPACE="default",
        HOME=str(home),
        PROJECT_APP_SPOOL=str(tmp_path / f"spool-{name}"),
        OTEL_FIRST_SPOOL_DIR=str(tmp_path / f"spool-{name}"),
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def running_service(script: Path, env: dict) -> Iterator[str]:
    """A service script started with ``env``: yields its ``/work`` URL once it printed
    its port as JSON; stopped with SIGTERM on exit (killed if it hangs)."""
    process = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()
        if not line:
            process.kill()
            raise AssertionError(f"{script.name} did not start: {process.stderr.read()}")
        yield f"http://127.0.0.1:{json.loads(line)['port']}/work"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _otel_sdk_version() -> tuple:
    from opentelemetry.sdk.version import __version__

    return tuple(int(part) for part in __version__.split(".")[:2] if part.isdigit())


# The byte-for-byte comparisons with OpenTelemetry's own encoder are pinned to the encoder
# of SDK 1.45 (what Python 3.10+ installs): 1.41, the last release for Python 3.9, refuses
# None inside arrays and writes empty values differently, so there is nothing to compare.
needs_current_otel_encoder = pytest.mark.skipif(
    _otel_sdk_version() < (1, 45), reason="compares with OpenTelemetry's encoder as of SDK 1.45"
)
