"""Where to send spans: Opik URL, API key, workspace and project, resolved like the Opik SDK does.

Precedence (contract §7): explicit arguments > ``OPIK_*`` environment variables > config
file (``OPIK_CONFIG_PATH`` or ``~/.opik.config``, INI section ``[opik]``) > defaults.

Setup mistakes that would otherwise show up later as a stream of 401/404/405 responses, or
as a crash inside the HTTP client, are refused here with a :class:`ConfigurationError` that
says what to do. Problems in optional inputs (an unreadable config file, a non-boolean
``track_disable``, a malformed URL suffix in the API key) only log one warning and fall
back to the next source. The API key is never written to any message.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from opik_otel._logging import get_logger
from opik_otel.config_file import read_config_section
from opik_otel.errors import ConfigurationError
from opik_otel.http_values import redact_url, validate_header_value

LOGGER = get_logger(__name__)

DEFAULT_CLOUD_URL = "https://www.comet.com/opik/api/"
DEFAULT_WORKSPACE = "default"
DEFAULT_PROJECT_NAME = "Default Project"
DEFAULT_CONFIG_FILE_NAME = ".opik.config"

ENV_URL = "OPIK_URL_OVERRIDE"
ENV_API_KEY = "OPIK_API_KEY"
ENV_WORKSPACE = "OPIK_WORKSPACE"
ENV_PROJECT_NAME = "OPIK_PROJECT_NAME"
ENV_TRACK_DISABLE = "OPIK_TRACK_DISABLE"
ENV_CONFIG_PATH = "OPIK_CONFIG_PATH"

OTLP_TRACES_PATH = "/v1/private/otel/v1/traces"
TRACES_BATCH_PATH = "/v1/private/traces/batch"

# Everything under this prefix belongs to an API base, so a URL containing it was copied
# from an endpoint rather than being the base itself.
_PRIVATE_API_PREFIX = "/v1/private"
_CLOUD_DOMAIN = "comet.com"
_CLOUD_API_PATH = "/opik/api"
_SELF_HOSTED_FRONTEND_PORT = 5173
_OTLP_GRPC_PORT = 4317
_OTLP_HTTP_COLLECTOR_PORT = 4318
_EXPECTED_URL_HINT = (
    "Set it to an Opik API base URL such as http://localhost:5173/api (self-hosted) "
    "or https://www.comet.com/opik/api (Opik Cloud)"
)
_API_KEY_URL_DELIMITER = "*"

_CREDENTIALS_HINT = (
    "Credentials in the URL would be sent to every host it redirects to and shown wherever the URL "
    "is; remove them. Set OPIK_API_KEY (or api_key=...) for Opik's key; a proxy that needs other "
    "credentials gets them through headers={...} on OpikExporter/configure()"
)

_TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off", "n", "f", ""})


@dataclass(frozen=True)
class OpikConfig:
    """Resolved settings for talking to one Opik project.

    Build it with :func:`resolve_config` to get the Opik SDK's precedence rules; direct
    construction is validated the same way. ``url`` is the API base (for example
    ``https://www.comet.com/opik/api``), stored without a trailing slash. ``api_key`` is
    excluded from ``repr``/``str`` so it cannot leak into logs.
    """

    url: str
    api_key: Optional[str] = field(default=None, repr=False)
    workspace: str = DEFAULT_WORKSPACE
    project_name: str = DEFAULT_PROJECT_NAME
    track_disable: bool = False

    def __post_init__(self) -> None:
        url = _validate_url(self.url, source="url")
        # Frozen dataclass: normalising the one field that needs it goes through object.
        object.__setattr__(self, "url", url)
        validate_header_value(self.workspace, setting="workspace", secret=False)
        validate_header_value(self.project_name, setting="project_name", secret=False)
        if self.api_key is not None:
            validate_header_value(self.api_key, setting="api_key", secret=True)
        # A disabled exporter sends nothing, so a missing key must not break CI runs
        # that turn tracking off.
        if self.is_cloud and self.api_key is None and not self.track_disable:
            raise _missing_api_key_error(url, source="the url field")

    @property
    def is_cloud(self) -> bool:
        """Whether the URL points at Opik Cloud (a ``comet.com`` host)."""
        return _is_cloud_host(urllib.parse.urlsplit(self.url).hostname)

    @property
    def otlp_traces_endpoint(self) -> str:
        """The OTLP/HTTP traces ingest URL (contract §1)."""
        return self.url + OTLP_TRACES_PATH

    @property
    def traces_batch_endpoint(self) -> str:
        """The REST URL that creates or upserts trace rows (contract §5)."""
        return self.url + TRACES_BATCH_PATH

    def headers(self) -> Dict[str, str]:
        """Routing and auth headers for every request to Opik (contract §1).

        ``Authorization`` carries the raw key (no ``Bearer``) and is present only when a
        key is configured; self-hosted Opik usually runs without authentication.
        """
        result = {"projectName": self.project_name, "Comet-Workspace": self.workspace}
        if self.api_key is not None:
            result["Authorization"] = self.api_key
        return result


def resolve_config(
    url: Optional[str] = None,
    api_key: Optional[str] = None,
    workspace: Optional[str] = None,
    project_name: Optional[str] = None,
    *,
    environ: Optional[Mapping[str, str]] = None,
    config_path: Optional[str] = None,
) -> OpikConfig:
    """Resolve Opik settings the way the Opik SDK does and validate them.

    Args:
        url: Opik API base URL; overrides ``OPIK_URL_OVERRIDE`` and the config file.
        api_key: Opik API key; overrides ``OPIK_API_KEY`` and the config file.
        workspace: Workspace; overrides ``OPIK_WORKSPACE`` and the config file.
        project_name: Project; overrides ``OPIK_PROJECT_NAME`` and the config file.
        environ: The environment to read instead of ``os.environ``. It replaces the
            process environment entirely, including ``HOME`` for ``~/.opik.config``.
        config_path: Config file to read instead of ``OPIK_CONFIG_PATH``/``~/.opik.config``.

    Values are stripped of surrounding whitespace (a trailing newline from a secrets file
    is the usual culprit) and blank values count as not given.

    Raises:
        ConfigurationError: the settings cannot work (cloud URL without a key, a URL that
            is not an Opik API base, header values with control characters, ...).
    """
    env = os.environ if environ is None else environ
    path, path_is_explicit = _config_file_path(env, config_path)
    file_values = read_config_section(path, explicit=path_is_explicit)

    def pick(explicit: Optional[str], arg_name: str, env_name: str, file_key: str) -> Tuple[Optional[str], str]:
        for value, source in (
            (explicit, f"the {arg_name}= argument"),
            (env.get(env_name), env_name),
            (file_values.get(file_key), f"{file_key} in the Opik config file"),
        ):
            cleaned = _clean(value)
            if cleaned is not None:
                return cleaned, source
        return None, ""

    key, key_source = pick(api_key, "api_key", ENV_API_KEY, "api_key")
    if key is not None:
        validate_header_value(key, setting=key_source, secret=True)
    url_value, url_source = pick(url, "url", ENV_URL, "url_override")
    if url_value is None and key is not None:
        url_value, url_source = _url_from_api_key(key), "the URL embedded in the API key"
    if url_value is None:
        url_value, url_source = DEFAULT_CLOUD_URL, "the default Opik Cloud URL"
    workspace_value, workspace_source = pick(workspace, "workspace", ENV_WORKSPACE, "workspace")
    project_value, project_source = pick(project_name, "project_name", ENV_PROJECT_NAME, "project_name")

    # Validate with the source named so the message points at the setting to fix.
    valid_url = _validate_url(url_value, source=url_source)
    if workspace_value is not None:
        validate_header_value(workspace_value, setting=workspace_source, secret=False)
    if project_value is not None:
        validate_header_value(project_value, setting=project_source, secret=False)

    track_disable = _resolve_track_disable(env.get(ENV_TRACK_DISABLE), file_values.get("track_disable"))
    if key is None and not track_disable and _is_cloud_host(urllib.parse.urlsplit(valid_url).hostname):
        raise _missing_api_key_error(valid_url, source=url_source)

    return OpikConfig(
        url=valid_url,
        api_key=key,
        workspace=workspace_value or DEFAULT_WORKSPACE,
        project_name=project_value or DEFAULT_PROJECT_NAME,
        track_disable=track_disable,
    )


def _missing_api_key_error(url: str, *, source: str) -> ConfigurationError:
    return ConfigurationError(
        f"No Opik API key is configured, but the Opik URL {url} (from {source}) is Opik Cloud, which "
        f"requires one. Set {ENV_API_KEY} (or pass api_key=...), run `opik configure`, or point "
        f"{ENV_URL} at a self-hosted Opik such as http://localhost:5173/api."
    )


def _clean(value: object) -> Optional[str]:
    """Strip a string setting; blank or non-string values count as not given."""
    if not isinstance(value, str):
        return None
    stripped = value.strip()
    return stripped or None


def _config_file_path(env: Mapping[str, str], config_path: Optional[str]) -> Tuple[Optional[str], bool]:
    """Pick the config file: argument, then ``OPIK_CONFIG_PATH``, then ``~/.opik.config``.

    Returns the path (``None`` when there is no home directory) and whether the user
    named it explicitly, which decides if a missing file deserves a warning.
    """
    explicit = _clean(config_path) or _clean(env.get(ENV_CONFIG_PATH))
    if explicit is not None:
        return os.path.expanduser(explicit), True
    if env is os.environ:
        home = os.path.expanduser("~")
        return (None if home == "~" else os.path.join(home, DEFAULT_CONFIG_FILE_NAME)), False
    # An injected environment stands for the whole environment, so a test passing {}
    # never picks up the developer's real ~/.opik.config.
    env_home = _clean(env.get("HOME")) or _clean(env.get("USERPROFILE"))
    return (None if env_home is None else os.path.join(env_home, DEFAULT_CONFIG_FILE_NAME)), False


def _resolve_track_disable(env_value: Optional[str], file_value: Optional[str]) -> bool:
    """Environment beats the file; an unreadable value is ignored with a warning."""
    for value, source in ((env_value, ENV_TRACK_DISABLE), (file_value, "track_disable in the Opik config file")):
        if value is None:
            continue
        parsed = _parse_bool(value)
        if parsed is not None:
            return parsed
        LOGGER.warning(
            "%s=%r is not a boolean; ignoring it. Use true or false.",
            source,
            value[:40],
        )
    return False


def _parse_bool(value: str) -> Optional[bool]:
    word = value.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    return None


def _url_from_api_key(key: str) -> Optional[str]:
    """Return the cloud URL embedded in a ``<key>*<base64 JSON>`` API key, if any.

    Only the URL is derived; the full key string is still sent as ``Authorization``,
    which is what the Opik SDK does. A suffix that does not decode falls back to the
    default URL with one warning that never quotes the key.
    """
    if _API_KEY_URL_DELIMITER not in key:
        return None
    parts = key.split(_API_KEY_URL_DELIMITER)
    base_url: object = None
    if len(parts) == 2 and parts[1]:
        try:
            attributes = json.loads(_decode_base64_lenient(parts[1]))
            if isinstance(attributes, dict):
                base_url = attributes.get("baseUrl")
        # The suffix is untrusted text; any failure to decode means "no URL in the key".
        except Exception:
            base_url = None
    if isinstance(base_url, str) and base_url.strip():
        return base_url.strip().rstrip("/") + _CLOUD_API_PATH + "/"
    LOGGER.warning(
        "The Opik API key has a '*' suffix that does not decode to a base URL; using the default "
        "Opik URL. Set %s explicitly if that is wrong.",
        ENV_URL,
    )
    return None


def _decode_base64_lenient(data: str) -> bytes:
    """Decode base64 whose padding may be missing or wrong, as keys are often copied."""
    unpadded = data.rstrip("=")
    return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)


def _is_cloud_host(host: Optional[str]) -> bool:
    if not host:
        return False
    host = host.lower().rstrip(".")
    return host == _CLOUD_DOMAIN or host.endswith("." + _CLOUD_DOMAIN)


def _validate_url(url: object, *, source: str) -> str:
    """Return ``url`` without trailing slashes, or raise if it is not an Opik API base."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"The Opik URL from {source} is empty. {_EXPECTED_URL_HINT}.")
    url = url.strip()
    # Every message quotes the URL redacted: it may carry a password.
    shown = redact_url(url)
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ConfigurationError(
            f"The Opik URL from {source} contains spaces or control characters: {shown!r}. {_EXPECTED_URL_HINT}."
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError(
            f"The Opik URL {shown!r} from {source} cannot be parsed. {_EXPECTED_URL_HINT}."
        ) from None
    if "@" in parts.netloc:
        raise ConfigurationError(f"The Opik URL {shown!r} from {source} contains credentials. {_CREDENTIALS_HINT}.")
    scheme = parts.scheme.lower()
    if scheme in ("grpc", "grpcs") or port == _OTLP_GRPC_PORT:
        raise ConfigurationError(
            f"The Opik URL {shown!r} from {source} looks like an OTLP/gRPC endpoint, but Opik only "
            f"accepts OTLP over HTTP. {_EXPECTED_URL_HINT}."
        )
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"The Opik URL {shown!r} from {source} must start with http:// or https:// and name a host. "
            f"{_EXPECTED_URL_HINT}."
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"The Opik URL {shown!r} from {source} has a query string or fragment; endpoint paths are "
            f"appended to it, so give only the API base. {_EXPECTED_URL_HINT}."
        )
    if port == _OTLP_HTTP_COLLECTOR_PORT:
        raise ConfigurationError(
            f"The Opik URL {shown!r} from {source} uses port {_OTLP_HTTP_COLLECTOR_PORT}, the OpenTelemetry "
            f"Collector's port, not Opik's. {_EXPECTED_URL_HINT}; to go through a collector, give the "
            f"collector's otlphttp exporter Opik's endpoint instead."
        )
    _reject_endpoint_path(url, parts, source)
    path = parts.path.rstrip("/")
    if _is_cloud_host(parts.hostname) and not path.endswith(_CLOUD_API_PATH):
        raise ConfigurationError(
            f"The Opik URL {shown!r} from {source} is an Opik Cloud host but not its API base; "
            f"use {parts.scheme}://{parts.netloc}{_CLOUD_API_PATH}."
        )
    if port == _SELF_HOSTED_FRONTEND_PORT and not path.endswith("/api"):
        # Not fatal: someone may run the backend itself on this port.
        LOGGER.warning(
            "The Opik URL %s uses the self-hosted UI port %s without the /api suffix; if requests "
            "fail with 404/405, use %s://%s/api.",
            url,
            _SELF_HOSTED_FRONTEND_PORT,
            parts.scheme,
            parts.netloc,
        )
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _reject_endpoint_path(url: str, parts: urllib.parse.SplitResult, source: str) -> None:
    """Refuse endpoint URLs (copied from OTel docs) where the API base is expected."""
    path = parts.path.rstrip("/")
    private_at = path.find(_PRIVATE_API_PREFIX)
    if private_at >= 0:
        base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path[:private_at], "", ""))
        raise ConfigurationError(
            f"The Opik URL {redact_url(url)!r} from {source} is an endpoint, not the Opik API base; "
            f"use {base} instead (the endpoint paths are added automatically)."
        )
    if path.endswith("/v1/traces") or path == "/v1" or path.endswith("/v1/metrics") or path.endswith("/v1/logs"):
        raise ConfigurationError(
            f"The Opik URL {redact_url(url)!r} from {source} is an OTLP endpoint, not the Opik API base. "
            f"{_EXPECTED_URL_HINT}."
        )
