"""Secrets (API key, URL password, secret custom header) never appear in a repr, a str,
an exception message, a log line of any logger at DEBUG, or a file on disk.

URL credentials are refused at setup (README, Configuration): the refusal message says
to use OPIK_API_KEY and never quotes the password. The API key and a secret header are
then used for real exports over loopback: to LocalOpik, to a LocalOpik that refuses the
key, that fails, that is down, and to a server that echoes the request headers back.
"""

import http.server
import logging
import os
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider

from opik_otel import (
    ConfigurationError,
    OpikConfig,
    OpikExporter,
    RetryPolicy,
    configure,
    resolve_config,
)
from opik_otel.propagator import OpikBaggagePropagator, OpikPropagator
from opik_otel.testing import LocalOpik

API_KEY = "sk-APIKEY-4f9a2c0b"
URL_PASSWORD = "PW-url-8d1e5a"
HEADER_SECRET = "hdr-SECRET-77c3e1"
SECRETS = (API_KEY, URL_PASSWORD, HEADER_SECRET)
HEADERS = {"X-Api-Key": HEADER_SECRET}
FAST = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)


def assert_no_secret(text, where):
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {where}: {text!r}"


@pytest.fixture
def every_log_line():
    """Every record of every logger (the package's, urllib3's, requests', the SDK's) at DEBUG."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(f"{record.name} {self.format(record)}")

    handler = Collect(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    touched = []
    for name in list(logging.root.manager.loggerDict) + ["urllib3", "requests", "opik_otel", "opentelemetry"]:
        logger = logging.getLogger(name)
        touched.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.DEBUG)
        logger.propagate = True
    yield lines
    root.removeHandler(handler)
    root.setLevel(previous)
    for logger, level, propagate in touched:
        logger.setLevel(level)
        logger.propagate = propagate


# --- setup: URL credentials are refused, nothing secret is quoted --------------------------

URL_WITH_PASSWORD = f"http://user:{URL_PASSWORD}@localhost:5173/api"

REFUSALS = {
    "url= argument": lambda tmp: resolve_config(url=URL_WITH_PASSWORD, api_key=API_KEY, environ={}),
    "OPIK_URL_OVERRIDE": lambda tmp: resolve_config(environ={"OPIK_URL_OVERRIDE": URL_WITH_PASSWORD, "OPIK_API_KEY": API_KEY}),
    "url_override in the config file": lambda tmp: resolve_config(environ={"OPIK_CONFIG_PATH": _config_file(tmp)}),
    "OpikConfig(url=)": lambda tmp: OpikConfig(url=URL_WITH_PASSWORD, api_key=API_KEY),
    "password and a space": lambda tmp: resolve_config(url=URL_WITH_PASSWORD + " x", environ={}),
    "password and a bad port": lambda tmp: resolve_config(url=f"http://u:{URL_PASSWORD}@h:port/api", environ={}),
    "password and a query": lambda tmp: resolve_config(url=URL_WITH_PASSWORD + f"?token={URL_PASSWORD}", environ={}),
    "password and gRPC": lambda tmp: resolve_config(url=f"grpc://u:{URL_PASSWORD}@h:4317", environ={}),
    "password and an endpoint path": lambda tmp: resolve_config(
        url=f"http://u:{URL_PASSWORD}@h/api/v1/private/otel/v1/traces", environ={}
    ),
    "otlp_endpoint=": lambda tmp: OpikExporter(
        url="http://localhost:5173/api", otlp_endpoint=f"http://u:{URL_PASSWORD}@collector:4318/v1/traces"
    ),
    "otlp_endpoint= not http": lambda tmp: OpikExporter(
        url="http://localhost:5173/api", otlp_endpoint=f"grpc://u:{URL_PASSWORD}@collector:4317"
    ),
    "otlp_endpoint= unparsable": lambda tmp: OpikExporter(
        url="http://localhost:5173/api", otlp_endpoint=f"http://u:{URL_PASSWORD}@[::1/v1/traces"
    ),
    "api_key with a line break": lambda tmp: resolve_config(url="http://h/api", api_key=API_KEY + "\nx", environ={}),
    "api_key with a control character": lambda tmp: resolve_config(url="http://h/api", api_key=API_KEY + "\x01", environ={}),
    "api_key beyond Latin-1": lambda tmp: resolve_config(url="http://h/api", api_key=API_KEY + "\u0100", environ={}),
    "secret header with CR/LF": lambda tmp: OpikExporter(url="http://h/api", headers={"X-Api-Key": HEADER_SECRET + "\r\nX: y"}),
    "secret header beyond Latin-1": lambda tmp: OpikExporter(url="http://h/api", headers={"X-Api-Key": HEADER_SECRET + "\u0100"}),
    "secret header with spaces around": lambda tmp: OpikExporter(url="http://h/api", headers={"X-Api-Key": f" {HEADER_SECRET} "}),
    "configure(url=)": lambda tmp: configure(
        url=URL_WITH_PASSWORD, api_key=API_KEY, tracer_provider=TracerProvider(), spool_directory=False
    ),
}


def _config_file(tmp):
    path = tmp / "opik.config"
    path.write_text(f"[opik]\nurl_override = {URL_WITH_PASSWORD}\napi_key = {API_KEY}\n")
    return str(path)


@pytest.mark.parametrize("path", sorted(REFUSALS))
def test_every_refusal_names_the_problem_without_the_secret(path, tmp_path, every_log_line, isolated_opik_settings):
    with pytest.raises(ConfigurationError) as info:
        REFUSALS[path](tmp_path)
    message = str(info.value)
    assert_no_secret(message, f"ConfigurationError ({path})")
    assert_no_secret(repr(info.value), f"repr of ConfigurationError ({path})")
    assert_no_secret("\n".join(every_log_line), f"logs ({path})")
    if path in ("url= argument", "OPIK_URL_OVERRIDE", "url_override in the config file", "OpikConfig(url=)"):
        assert "contains credentials" in message and "OPIK_API_KEY" in message
        assert "'http://localhost:5173/api'" in message  # the URL is named, redacted


# --- real exports: every repr, every log line, every file --------------------------------


class _EchoServer(http.server.ThreadingHTTPServer):
    """Answers 400 with the request's headers in the body, as a misbehaving proxy might."""

    daemon_threads = True


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the base class's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = str(dict(self.headers)).encode("latin-1", "replace")
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002
        pass


def reprs_of(tracing, provider):
    exporter = tracing.exporter
    parts = {
        "OpikTracing": tracing,
        "OpikExporter": exporter,
        "OpikConfig": exporter.config,
        "OpikBatchSpanProcessor": tracing.span_processor,
        "OpikSpanProcessor": tracing.linkage_processor,
        "DeliveryQueue": exporter.queue,
        "stats": exporter.stats,
        "OpikPropagator": OpikPropagator(),
        "OpikBaggagePropagator": OpikBaggagePropagator(),
        "RetryPolicy": FAST,
        "TracerProvider": provider,
    }
    return {name: (repr(value), str(value)) for name, value in parts.items()}


def export_some(tracer, tracing, count=3):
    for i in range(count):
        with tracer.start_as_current_span(f"span-{i}"):
            with tracer.start_as_current_span("child"):
                pass
    tracing.force_flush(3000)


def spool_bytes(directory):
    found = b""
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                found += handle.read()
    return found


@pytest.mark.parametrize("scenario", ["accepted", "key refused", "failing", "down", "echoing proxy"])
def test_exports_leak_no_secret_in_reprs_logs_or_spool(scenario, tmp_path, every_log_line, isolated_opik_settings):
    spool = tmp_path / "spool"
    echo = None
    opik = LocalOpik(api_key="another-key" if scenario == "key refused" else API_KEY)
    opik.start()
    url = opik.url
    if scenario == "echoing proxy":
        echo = _EchoServer(("127.0.0.1", 0), _EchoHandler)
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{echo.server_address[1]}/api"
    provider = TracerProvider()
    try:
        tracing = configure(
            url=url, api_key=API_KEY, headers=HEADERS, tracer_provider=provider, spool_directory=spool,
            retry_policy=FAST, schedule_delay_millis=50,
        )
        tracer = provider.get_tracer("tests.secrets")
        if scenario == "failing":
            opik.fail_next(4, 503)
        if scenario == "down":
            with opik.down():
                export_some(tracer, tracing)
                on_disk = spool_bytes(spool)
                assert on_disk, "the outage should have spooled something"
                assert_no_secret(on_disk.decode("latin-1"), "spool files")
        else:
            export_some(tracer, tracing)
        assert_no_secret(spool_bytes(spool).decode("latin-1"), "spool files")
        export_some(tracer, tracing)
        for name, (as_repr, as_str) in reprs_of(tracing, provider).items():
            assert_no_secret(as_repr, f"repr({name})")
            assert_no_secret(as_str, f"str({name})")
        for record in opik.requests:
            assert_no_secret(repr(record), "LocalOpik's request records")
        assert_no_secret(repr(opik), "repr(LocalOpik)")
        tracing.shutdown(3000)
        provider.shutdown()
    finally:
        opik.stop()
        if echo is not None:
            echo.shutdown()
            echo.server_close()
    logged = "\n".join(every_log_line)
    assert_no_secret(logged, f"logs ({scenario})")
    assert any(line.startswith("urllib3") for line in every_log_line), "urllib3 debug lines were captured"
    if scenario == "accepted":
        assert len(opik.spans()) == 12  # the export really carried the key
    if scenario in ("key refused", "echoing proxy"):
        assert "opik_otel.exporter" in logged  # the refusal was logged, secret-free
