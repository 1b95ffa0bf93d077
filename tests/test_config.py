"""Tests for opik_otel.config: precedence, config files, key-embedded URLs, errors, redaction."""

import base64
import dataclasses
import json
import logging
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opik_otel._logging import reset_rate_limits
from opik_otel import ConfigurationError
from opik_otel.config import DEFAULT_CLOUD_URL, OpikConfig, resolve_config
from opik_otel.http_values import redact_url

SECRET = "sk-SECRET-zq9Xv7Wl3Km"
LOCAL = "http://localhost:5173/api"
CLOUD = "https://www.comet.com/opik/api"
LOGGER_NAME = "opik_otel.config"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    # Warnings are rate-limited per message; each test must see its own.
    reset_rate_limits()
    yield
    reset_rate_limits()


def write_config(path: Path, body: str) -> str:
    path.write_text(body, encoding="utf-8")
    return str(path)


def key_with_url(base_url, key=SECRET, strip_padding=True):
    suffix = base64.b64encode(json.dumps({"baseUrl": base_url}).encode()).decode()
    return f"{key}*{suffix.rstrip('=') if strip_padding else suffix}"


def config_warnings(caplog):
    return [r for r in caplog.records if r.name.startswith(LOGGER_NAME) and r.levelno >= logging.WARNING]


# --- defaults and derived values -------------------------------------------------------


def test_defaults_are_the_opik_sdk_defaults():
    config = resolve_config(api_key=SECRET, environ={})
    assert config.url == DEFAULT_CLOUD_URL.rstrip("/") == CLOUD
    assert config.workspace == "default"
    assert config.project_name == "Default Project"
    assert config.track_disable is False
    assert config.is_cloud


def test_endpoints_and_headers():
    config = resolve_config(url=LOCAL + "/", workspace="ws", project_name="proj", environ={})
    assert config.url == LOCAL
    assert config.otlp_traces_endpoint == "http://localhost:5173/api/v1/private/otel/v1/traces"
    assert config.traces_batch_endpoint == "http://localhost:5173/api/v1/private/traces/batch"
    assert config.headers() == {"projectName": "proj", "Comet-Workspace": "ws"}
    assert not config.is_cloud


def test_authorization_header_is_the_raw_key_without_bearer():
    config = resolve_config(url=LOCAL, api_key=SECRET, environ={})
    assert config.headers()["Authorization"] == SECRET


def test_trailing_slashes_are_stripped_on_direct_construction_too():
    assert OpikConfig(url="http://opik.internal:8080//").url == "http://opik.internal:8080"


def test_config_is_frozen():
    config = OpikConfig(url=LOCAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.url = CLOUD  # type: ignore[misc]


@pytest.mark.parametrize(
    "url, cloud",
    [
        ("https://www.comet.com/opik/api", True),
        ("https://acme.comet.com/opik/api", True),
        ("https://comet.com/opik/api", True),
        ("https://notcomet.com/opik/api", False),
        ("https://comet.com.evil.example/opik/api", False),
        ("http://localhost:5173/api", False),
    ],
)
def test_is_cloud(url, cloud):
    assert OpikConfig(url=url, api_key=SECRET).is_cloud is cloud


# --- precedence -------------------------------------------------------------------------

SETTINGS = [
    # argument name, env variable, config file key, three distinct valid values
    ("url", "OPIK_URL_OVERRIDE", "url_override", ("http://arg:1/api", "http://env:2/api", "http://file:3/api")),
    ("api_key", "OPIK_API_KEY", "api_key", ("key-arg", "key-env", "key-file")),
    ("workspace", "OPIK_WORKSPACE", "workspace", ("ws-arg", "ws-env", "ws-file")),
    ("project_name", "OPIK_PROJECT_NAME", "project_name", ("p-arg", "p-env", "p-file")),
]
DEFAULTS = {"url": CLOUD, "api_key": None, "workspace": "default", "project_name": "Default Project"}


@pytest.mark.parametrize("name, env_name, file_key, values", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_precedence_argument_env_file_default(tmp_path, name, env_name, file_key, values):
    arg_value, env_value, file_value = values
    path = write_config(tmp_path / "opik.config", f"[opik]\n{file_key} = {file_value}\n")
    # Self-hosted URL and a key keep the cloud-without-key check out of the way.
    base = {"url": LOCAL} if name != "url" else {"api_key": "k"}
    env = {env_name: env_value, "OPIK_CONFIG_PATH": path}

    def resolved(environ, **kwargs):
        return getattr(resolve_config(**base, **kwargs, environ=environ), name)

    assert resolved(env, **{name: arg_value}) == arg_value
    assert resolved(env) == env_value
    assert resolved({"OPIK_CONFIG_PATH": path}) == file_value
    assert resolved({}) == DEFAULTS[name]


def test_track_disable_precedence(tmp_path):
    path = write_config(tmp_path / "c", "[opik]\ntrack_disable = true\n")
    assert resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": path}).track_disable is True
    env = {"OPIK_CONFIG_PATH": path, "OPIK_TRACK_DISABLE": "false"}
    assert resolve_config(url=LOCAL, environ=env).track_disable is False
    assert resolve_config(url=LOCAL, environ={"OPIK_TRACK_DISABLE": "1"}).track_disable is True
    assert resolve_config(url=LOCAL, environ={}).track_disable is False


@pytest.mark.parametrize("word, expected", [("TRUE", True), ("yes", True), (" on ", True), ("0", False), ("No", False)])
def test_track_disable_words(word, expected):
    assert resolve_config(url=LOCAL, environ={"OPIK_TRACK_DISABLE": word}).track_disable is expected


def test_blank_values_count_as_not_given():
    env = {"OPIK_PROJECT_NAME": "env-project", "OPIK_WORKSPACE": "   ", "OPIK_URL_OVERRIDE": ""}
    config = resolve_config(url=LOCAL, project_name="", api_key="", environ={**env, "OPIK_URL_OVERRIDE": LOCAL})
    assert config.project_name == "env-project"
    assert config.workspace == "default"
    assert config.api_key is None


def test_surrounding_whitespace_such_as_a_trailing_newline_is_stripped():
    env = {"OPIK_API_KEY": SECRET + "\n", "OPIK_URL_OVERRIDE": f"  {LOCAL}/\n", "OPIK_PROJECT_NAME": " proj\r\n"}
    config = resolve_config(environ=env)
    assert (config.api_key, config.url, config.project_name) == (SECRET, LOCAL, "proj")


# --- config file --------------------------------------------------------------------------


def test_config_file_from_opik_config_path(tmp_path):
    path = write_config(
        tmp_path / "custom.ini",
        "[opik]\nurl_override = http://localhost:5173/api/\nworkspace = team\n"
        "project_name = From File\napi_key = file-key\ntrack_disable = false\n",
    )
    config = resolve_config(environ={"OPIK_CONFIG_PATH": path})
    assert config == OpikConfig(url=LOCAL, api_key="file-key", workspace="team", project_name="From File")


def test_config_file_from_home(tmp_path, monkeypatch):
    write_config(tmp_path / ".opik.config", "[opik]\nurl_override = http://home-opik:8080\nproject_name = Home\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("OPIK_CONFIG_PATH", "OPIK_URL_OVERRIDE", "OPIK_API_KEY", "OPIK_WORKSPACE", "OPIK_PROJECT_NAME"):
        monkeypatch.delenv(name, raising=False)
    config = resolve_config()
    assert (config.url, config.project_name) == ("http://home-opik:8080", "Home")


def test_injected_environ_reads_home_from_itself(tmp_path):
    write_config(tmp_path / ".opik.config", "[opik]\nproject_name = Home\nurl_override = http://h:1\n")
    assert resolve_config(environ={"HOME": str(tmp_path)}).project_name == "Home"
    # Without HOME in the injected environment no home file is read at all.
    assert resolve_config(url=LOCAL, environ={}).project_name == "Default Project"


def test_config_path_argument_beats_opik_config_path(tmp_path):
    env_file = write_config(tmp_path / "env.ini", "[opik]\nproject_name = env-file\n")
    arg_file = write_config(tmp_path / "arg.ini", "[opik]\nproject_name = arg-file\n")
    config = resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": env_file}, config_path=arg_file)
    assert config.project_name == "arg-file"


def test_config_file_values_with_percent_signs_are_read_verbatim(tmp_path):
    path = write_config(tmp_path / "c", "[opik]\napi_key = abc%def\nurl_override = http://h:1\n")
    assert resolve_config(environ={"OPIK_CONFIG_PATH": path}).api_key == "abc%def"


def test_config_file_without_opik_section_is_ignored_silently(tmp_path, caplog):
    path = write_config(tmp_path / "c", "[other]\nproject_name = nope\n")
    assert resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": path}).project_name == "Default Project"
    assert config_warnings(caplog) == []


@pytest.mark.parametrize(
    "body",
    [
        "project_name = no section header\n",
        f"[opik]\napi_key {SECRET}\n",  # no '=': configparser would quote the line, key included
        f"[opik]\napi_key = {SECRET}\napi_key = {SECRET}\n",
        "[opik]\n[opik]\n",
    ],
    ids=["no-section", "bad-line", "duplicate-option", "duplicate-section"],
)
def test_malformed_config_file_warns_once_and_is_ignored(tmp_path, caplog, body):
    path = write_config(tmp_path / "broken.config", body)
    config = resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": path})
    assert config.project_name == "Default Project" and config.api_key is None
    warnings = config_warnings(caplog)
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "not a valid INI file" in text and path in text and "opik configure" in text
    assert SECRET not in caplog.text


def test_undecodable_config_file_warns(tmp_path, caplog):
    path = tmp_path / "binary.config"
    path.write_bytes(b"[opik]\nproject_name = \xff\xfe\n")
    assert resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": str(path)}).project_name == "Default Project"
    assert len(config_warnings(caplog)) == 1
    assert "cannot be read" in caplog.text


def test_config_path_that_is_a_directory_warns(tmp_path, caplog):
    assert resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": str(tmp_path)}).url == LOCAL
    assert len(config_warnings(caplog)) == 1


def test_missing_explicit_config_file_warns_but_missing_home_file_does_not(tmp_path, caplog):
    missing = str(tmp_path / "nope.config")
    resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": missing})
    assert len(config_warnings(caplog)) == 1 and "does not exist" in caplog.text
    caplog.clear()
    resolve_config(url=LOCAL, environ={"HOME": str(tmp_path)})
    assert config_warnings(caplog) == []


def test_non_boolean_track_disable_warns_and_falls_back(tmp_path, caplog):
    path = write_config(tmp_path / "c", "[opik]\ntrack_disable = true\n")
    config = resolve_config(url=LOCAL, environ={"OPIK_TRACK_DISABLE": "sometimes", "OPIK_CONFIG_PATH": path})
    assert config.track_disable is True  # the bad env value is ignored, the file's value used
    warnings = config_warnings(caplog)
    assert len(warnings) == 1
    assert "OPIK_TRACK_DISABLE" in warnings[0].getMessage() and "true or false" in warnings[0].getMessage()


def test_non_boolean_track_disable_in_file_falls_back_to_false(tmp_path, caplog):
    path = write_config(tmp_path / "c", "[opik]\ntrack_disable = perhaps\n")
    assert resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": path}).track_disable is False
    assert len(config_warnings(caplog)) == 1


# --- API key with an embedded URL -----------------------------------------------------------


@pytest.mark.parametrize("strip_padding", [True, False])
def test_key_with_embedded_url_sets_the_cloud_url(strip_padding):
    key = key_with_url("https://acme.comet.com/", strip_padding=strip_padding)
    config = resolve_config(api_key=key, environ={})
    assert config.url == "https://acme.comet.com/opik/api"
    # The Opik SDK sends the whole key, suffix included, as Authorization.
    assert config.headers()["Authorization"] == key


def test_key_with_embedded_url_from_env_and_without_trailing_slash():
    config = resolve_config(environ={"OPIK_API_KEY": key_with_url("https://acme.comet.com")})
    assert config.url == "https://acme.comet.com/opik/api"


@pytest.mark.parametrize("source", ["argument", "env", "file"])
def test_any_explicit_url_wins_over_the_key_embedded_url(tmp_path, source):
    key = key_with_url("https://acme.comet.com/")
    path = write_config(tmp_path / "c", "[opik]\nurl_override = http://from-file:1/api\n")
    env = {"OPIK_CONFIG_PATH": path}
    expected = "http://from-file:1/api"
    kwargs = {}
    if source in ("argument", "env"):
        env["OPIK_URL_OVERRIDE"] = "http://from-env:2/api"
        expected = "http://from-env:2/api"
    if source == "argument":
        kwargs["url"] = expected = "http://from-arg:3/api"
    assert resolve_config(api_key=key, environ=env, **kwargs).url == expected


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "suffix",
    ["!!!not-base64!!!", _b64(b"not json"), _b64(b"[1, 2]"), _b64(b'{"other": 1}'), _b64(b'{"baseUrl": 5}'), "", "x*y"],
    ids=["not-base64", "not-json", "json-list", "no-baseUrl", "non-string-baseUrl", "empty", "too-many-parts"],
)
def test_malformed_key_suffix_falls_back_with_one_warning(caplog, suffix):
    key = f"{SECRET}*{suffix}"
    config = resolve_config(api_key=key, environ={})
    assert config.url == CLOUD
    assert config.api_key == key
    warnings = config_warnings(caplog)
    assert len(warnings) == 1 and "does not decode to a base URL" in warnings[0].getMessage()
    assert SECRET not in caplog.text


def test_key_embedded_url_is_validated_like_any_other():
    with pytest.raises(ConfigurationError, match="embedded in the API key") as info:
        resolve_config(api_key=key_with_url("grpc://acme.comet.com"), environ={})
    assert SECRET not in str(info.value)


# --- setup errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, environ, source",
    [
        ({}, {}, "default Opik Cloud URL"),
        ({"url": CLOUD}, {}, "url= argument"),
        ({}, {"OPIK_URL_OVERRIDE": "https://acme.comet.com/opik/api/"}, "OPIK_URL_OVERRIDE"),
    ],
)
def test_cloud_url_without_api_key_is_an_error(kwargs, environ, source):
    with pytest.raises(ConfigurationError) as info:
        resolve_config(**kwargs, environ=environ)
    message = str(info.value)
    for needle in ("API key", "OPIK_API_KEY", "opik configure", "OPIK_URL_OVERRIDE", "self-hosted", source):
        assert needle in message


def test_direct_construction_also_refuses_cloud_without_key():
    with pytest.raises(ConfigurationError, match="OPIK_API_KEY"):
        OpikConfig(url=CLOUD)


def test_cloud_without_key_is_fine_when_tracking_is_disabled():
    assert resolve_config(environ={"OPIK_TRACK_DISABLE": "true"}).track_disable is True


def test_configuration_error_is_a_value_error():
    assert issubclass(ConfigurationError, ValueError)


EXPECTED_BASES = ("http://localhost:5173/api", "https://www.comet.com/opik/api")


@pytest.mark.parametrize(
    "url, needles",
    [
        ("grpc://localhost:4317", ("gRPC", "only accepts OTLP over HTTP", *EXPECTED_BASES)),
        ("http://localhost:4317", ("gRPC", *EXPECTED_BASES)),
        ("http://localhost:4318", ("4318", "Collector", *EXPECTED_BASES)),
        ("http://localhost:4318/v1/traces", ("4318", "Collector")),
        ("http://collector.local/v1/traces", ("OTLP endpoint", *EXPECTED_BASES)),
        (
            "http://localhost:5173/api/v1/private/otel/v1/traces",
            ("is an endpoint", "use http://localhost:5173/api instead"),
        ),
        (
            "https://www.comet.com/opik/api/v1/private/otel",
            ("is an endpoint", "use https://www.comet.com/opik/api instead"),
        ),
        ("http://opik:8080/v1/private/traces/batch", ("use http://opik:8080 instead",)),
        ("localhost:5173/api", ("http:// or https://", *EXPECTED_BASES)),
        ("ftp://opik.example/api", ("http:// or https://",)),
        ("http:///api", ("name a host",)),
        ("https://www.comet.com/", ("not its API base", "https://www.comet.com/opik/api")),
        ("http://localhost:5173/api?x=1", ("query string",)),
        ("http://localhost:notaport/api", ("cannot be parsed",)),
        ("http://local host/api", ("spaces or control characters",)),
    ],
)
def test_urls_that_are_not_an_opik_api_base_are_refused(url, needles):
    with pytest.raises(ConfigurationError) as info:
        resolve_config(url=url, api_key=SECRET, environ={})
    message = str(info.value)
    assert redact_url(url) in message  # a query string may hold a token: it is never quoted
    for needle in needles:
        assert needle in message
    assert SECRET not in message


def test_url_error_names_the_env_variable_it_came_from():
    with pytest.raises(ConfigurationError, match="OPIK_URL_OVERRIDE"):
        resolve_config(environ={"OPIK_URL_OVERRIDE": "grpc://x:4317"})


def test_ui_port_without_api_suffix_only_warns(caplog):
    assert resolve_config(url="http://localhost:5173", environ={}).url == "http://localhost:5173"
    assert "http://localhost:5173/api" in caplog.text


# --- header injection ---------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["workspace", "project_name"])
@pytest.mark.parametrize(
    "value, needle",
    [
        ("proj\r\nX-Injected: 1", "line break"),
        ("proj\nX: 1", "line break"),
        ("pro\tj", "U+0009"),
        ("pro\x00j", "U+0000"),
        ("proj\x7f", "U+007F"),
        ("プロジェクト", "Latin-1"),
    ],
)
def test_header_values_with_control_or_unsendable_characters_are_refused(setting, value, needle):
    with pytest.raises(ConfigurationError) as info:
        resolve_config(url=LOCAL, environ={}, **{setting: value})
    assert needle in str(info.value) and setting in str(info.value)
    with pytest.raises(ConfigurationError):
        OpikConfig(url=LOCAL, **{setting: value})


def test_latin1_names_are_allowed():
    assert resolve_config(url=LOCAL, project_name="Projet été", environ={}).project_name == "Projet été"


@pytest.mark.parametrize("bad", ["\r\nX-Injected: 1", "\x00", "\u2028", "€"])
def test_api_key_with_bad_characters_is_refused_without_echoing_it(bad):
    key = SECRET[:8] + bad + SECRET[8:]
    for kwargs, environ, source in (
        ({"api_key": key}, {}, "api_key= argument"),
        ({}, {"OPIK_API_KEY": key}, "OPIK_API_KEY"),
    ):
        with pytest.raises(ConfigurationError) as info:
            resolve_config(url=LOCAL, environ=environ, **kwargs)
        message = str(info.value)
        assert source in message
        assert SECRET[:8] not in message and SECRET[8:] not in message
    with pytest.raises(ConfigurationError) as info:
        OpikConfig(url=LOCAL, api_key=key)
    assert SECRET[8:] not in str(info.value)


# --- redaction ------------------------------------------------------------------------------------


def test_api_key_never_appears_in_repr_or_str():
    config = resolve_config(api_key=SECRET, environ={})
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert SECRET not in f"{config!r} {config}"
    assert "api_key" not in repr(config)


def test_api_key_never_appears_in_errors_or_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    failing = [
        {"url": "grpc://x:4317", "api_key": SECRET},
        {"url": CLOUD, "api_key": SECRET, "project_name": "a\nb"},
        {"url": "https://www.comet.com", "api_key": SECRET},
        {"api_key": SECRET + "*" + _b64(b'{"baseUrl": "ftp://nope"}')},
    ]
    for kwargs in failing:
        with pytest.raises(ConfigurationError) as info:
            resolve_config(environ={}, **kwargs)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    bad_file = write_config(tmp_path / "c", f"api_key={SECRET}\n")
    resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": bad_file, "OPIK_TRACK_DISABLE": SECRET[:3]})
    resolve_config(api_key=SECRET + "*garbage", environ={})
    assert caplog.records, "the scenarios above are expected to log"
    assert SECRET not in caplog.text


# --- property test ----------------------------------------------------------------------------------

ENV_NAMES = (
    "OPIK_URL_OVERRIDE",
    "OPIK_API_KEY",
    "OPIK_WORKSPACE",
    "OPIK_PROJECT_NAME",
    "OPIK_TRACK_DISABLE",
    "OPIK_CONFIG_PATH",
)
_env_value = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="latin-1")),
    st.sampled_from(["http://localhost:5173/api", CLOUD, "grpc://x:4317", "", " ", "true"]),
    st.builds(lambda a, b: a + "\r\n" + b, st.text(max_size=5), st.text(max_size=5)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.dictionaries(st.sampled_from(ENV_NAMES), _env_value), url=st.one_of(st.none(), st.text()))
def test_arbitrary_settings_raise_only_configuration_error_and_never_emit_cr_lf(env, url):
    try:
        config = resolve_config(url=url, environ=env)
    except ConfigurationError:
        return
    headers = config.headers()
    for name, value in headers.items():
        assert "\r" not in value and "\n" not in value, name
        assert value == value.strip() and value
        value.encode("latin-1")
    assert config.url.startswith(("http://", "https://"))
    assert not config.url.endswith("/")


# --- config files that are not regular files (issue 9) -------------------------------------


def run_resolve_in_child(path, timeout=20):
    """resolve_config in a subprocess, so that a hang or a memory blow-up fails the test
    instead of the test run."""
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format='%(name)s %(message)s')\n"
        "from opik_otel import resolve_config\n"
        f"print(resolve_config(url={LOCAL!r}, environ={{'OPIK_CONFIG_PATH': sys.argv[1]}}).project_name)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, path], capture_output=True, text=True, timeout=timeout, check=True
    ).stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_config_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "opik.config"
    os.mkfifo(fifo)
    out = run_resolve_in_child(str(fifo))  # no writer ever comes: reading would block forever
    assert "Default Project" in out
    assert str(fifo) in out and "not a regular file (a FIFO)" in out


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_an_endless_device_as_config_file_is_refused():
    out = run_resolve_in_child("/dev/zero")
    assert "/dev/zero is not a regular file (a device)" in out


def test_a_huge_config_file_is_refused_unread(tmp_path, caplog):
    from opik_otel.config_file import MAX_CONFIG_FILE_BYTES

    path = tmp_path / "big.config"
    path.write_text("[opik]\nproject_name = big\n" + "#" * MAX_CONFIG_FILE_BYTES + "\n")
    assert resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": str(path)}).project_name == "Default Project"
    warnings = config_warnings(caplog)
    assert len(warnings) == 1 and "larger than" in warnings[0].getMessage() and str(path) in warnings[0].getMessage()


def test_a_config_file_through_a_symlink_is_read(tmp_path):
    target = write_config(tmp_path / "real.config", "[opik]\nproject_name = linked\n")
    link = tmp_path / "link.config"
    link.symlink_to(target)
    assert resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": str(link)}).project_name == "linked"


def test_a_directory_as_config_file_is_named_as_such(tmp_path, caplog):
    resolve_config(url=LOCAL, environ={"OPIK_CONFIG_PATH": str(tmp_path)})
    (warning,) = config_warnings(caplog)
    assert "not a regular file (a directory)" in warning.getMessage() and str(tmp_path) in warning.getMessage()
