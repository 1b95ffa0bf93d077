"""Small checks shared by several test modules."""

import os
import sys
import uuid
from typing import Any


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

__all__ = ["app_env", "entry_points", "is_canonical_v7"]


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
