"""pytest plugin (entry point ``pytest11``): the ``local_opik`` fixture.

``local_opik`` starts a :class:`~opik_otel.testing.LocalOpik`, points the ``OPIK_*``
settings at it, and :func:`opik_otel.configure`\\ s the *global* OTel tracer provider to
export to it, so code under test that uses ``trace.get_tracer(...)`` (at call time or at
import time) is recorded. After the test it flushes, shuts the pipeline down and puts
back the environment and the provider's span processors as they were.

Why span processors and not the provider: OTel lets the global provider be set only
once per process, and tracers handed out by it (often stored at module level) keep
pointing at the provider they came from. So the plugin installs one SDK
``TracerProvider`` globally the first time it is needed (or uses the SDK provider the
application already registered) and gives each test a fresh set of processors on it.
Removing the test's processors reads the SDK's ``SynchronousMultiSpanProcessor`` tuple
(a private attribute, stable across SDK 1.x).
"""

from typing import Iterator, Tuple

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from opik_otel.testing.server import LocalOpik
from opik_otel.tracing import OpikTracing, configure

_CLEARED_SETTINGS = ("OPIK_API_KEY", "OPIK_WORKSPACE", "OPIK_PROJECT_NAME", "OPIK_TRACK_DISABLE")


def global_sdk_provider() -> TracerProvider:
    """The global SDK ``TracerProvider``, registered now if none is set yet.

    Raises ``RuntimeError`` when another kind of provider is registered globally: spans
    of code under test could not be exported to LocalOpik then.
    """
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        raise RuntimeError(
            f"The global tracer provider is a {type(current).__name__}, not an OpenTelemetry "
            "SDK TracerProvider: the local_opik fixture cannot export its spans. Register an "
            "SDK TracerProvider, or configure() your own provider with url=opik.url."
        )
    return current


@pytest.fixture
def local_opik_tracing(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Tuple[LocalOpik, OpikTracing]]:
    """A LocalOpik and the ``configure()`` pipeline on the global provider exporting to it."""
    provider = global_sdk_provider()
    multi = provider._active_span_processor  # see the module docs
    with multi._lock:
        processors_before = multi._span_processors
    home = tmp_path_factory.mktemp("opik_home")
    config_file = home / ".opik.config"
    config_file.write_text("")  # the developer's ~/.opik.config must not leak in
    with LocalOpik() as opik, pytest.MonkeyPatch.context() as env:
        for name in _CLEARED_SETTINGS:
            env.delenv(name, raising=False)
        env.setenv("OPIK_URL_OVERRIDE", opik.url)
        env.setenv("OPIK_CONFIG_PATH", str(config_file))
        tracing = configure(tracer_provider=provider, spool_directory=str(home / "spool"))
        try:
            yield opik, tracing
        finally:
            tracing.force_flush(timeout_millis=5000)
            tracing.shutdown(timeout_millis=5000)
            with multi._lock:
                multi._span_processors = processors_before


@pytest.fixture
def local_opik(local_opik_tracing: Tuple[LocalOpik, OpikTracing]) -> LocalOpik:
    """A LocalOpik that the global tracer provider and ``OPIK_*`` settings point at.

    Call ``trace.get_tracer_provider().force_flush()`` (or use ``local_opik_tracing``
    and its ``force_flush()``) before asserting on what arrived.
    """
    return local_opik_tracing[0]
