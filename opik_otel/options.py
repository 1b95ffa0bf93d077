"""Checking the exporter's settings: each function returns the value to use or raises
:class:`~opik_otel.config.ConfigurationError` saying what to fix."""

import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Union
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .http_values import is_secret_header, redact_url, validate_header_value
from .retry import RetryPolicy
from .repairs import is_sendable_text

# RFC 9110 token characters: what an HTTP header name may consist of.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# Headers the exporter or the HTTP client manage; a user value would corrupt the framing.
_RESERVED_HEADERS = frozenset(
    {"content-length", "content-type", "content-encoding", "transfer-encoding", "connection", "keep-alive",
     "te", "trailer", "upgrade", "expect"}
)


def positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, not {type(value).__name__}.")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive, finite number of seconds, not {value!r}.")
    return float(value)


def integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer, not {type(value).__name__}.")
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {value}.")
    return value


def path_setting(name: str, value: Any) -> str:
    try:
        path = os.fspath(value)
    except TypeError:
        raise ConfigurationError(f"{name} must be a path (str or os.PathLike), not {type(value).__name__}.") from None
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise ConfigurationError(f"{name} must be a non-empty text path, not {path!r}.")
    return os.path.expanduser(path)


def validated_verify(verify: Any) -> Union[bool, str]:
    if isinstance(verify, bool):
        return verify
    if isinstance(verify, (str, os.PathLike)):
        path = path_setting("verify", verify)
        if not (os.path.isfile(path) or os.path.isdir(path)):
            raise ConfigurationError(
                f"verify={path!r} is neither a CA bundle file nor a directory of certificates; give the "
                "path of the PEM file that signed Opik's certificate, or True to use the system's CAs."
            )
        return path
    raise ConfigurationError(f"verify must be True, False or the path of a CA bundle, not {type(verify).__name__}.")


def validated_policy(name: str, policy: Any, default: RetryPolicy) -> RetryPolicy:
    if policy is None:
        return default
    if not isinstance(policy, RetryPolicy):
        raise ConfigurationError(f"{name} must be an opik_otel.retry.RetryPolicy, not {type(policy).__name__}.")
    return policy


def validated_tags(tags: Any) -> List[str]:
    if tags is None:
        return []
    if isinstance(tags, (str, bytes)) or not isinstance(tags, (list, tuple, set, frozenset)):
        raise ConfigurationError(f"tags must be a list of strings, not {type(tags).__name__}.")
    result = []
    for tag in tags:
        if not isinstance(tag, str):
            raise ConfigurationError(f"tags must be strings; got {type(tag).__name__}.")
        if not is_sendable_text(tag):
            raise ConfigurationError(f"tag {tag!r} is not valid Unicode text.")
        result.append(tag)
    return result


def validated_metadata(metadata: Any) -> Dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConfigurationError(f"metadata must be a mapping, not {type(metadata).__name__}.")
    result = {}
    for key, value in metadata.items():
        if not is_sendable_text(key):
            raise ConfigurationError(f"metadata keys must be text strings; got {key!r}.")
        result[key] = value
    # Values need no check: dump_json writes anything odd as a string.
    return result


def validated_thread_id(thread_id: Any) -> Optional[str]:
    if thread_id is None:
        return None
    if isinstance(thread_id, int) and not isinstance(thread_id, bool):
        return str(thread_id)
    if not is_sendable_text(thread_id):
        raise ConfigurationError(f"thread_id must be a string, not {type(thread_id).__name__}.")
    return thread_id.strip() or None


def validated_headers(headers: Any) -> Dict[str, str]:
    """Extra headers, refused at setup when they could not be sent or could inject
    headers (CR/LF), instead of failing every request later."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ConfigurationError(f"headers must be a mapping of names to values, not {type(headers).__name__}.")
    result: Dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME(name):
            raise ConfigurationError(
                f"Header name {name!r} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)."
            )
        if name.lower() in _RESERVED_HEADERS:
            raise ConfigurationError(f"Header {name!r} is set by the exporter itself and cannot be given in headers=.")
        validate_header_value(value, setting=f"the value of header {name!r}", secret=is_secret_header(name))
        result[name] = value
    return result


def validated_endpoint(endpoint: Any) -> str:
    if not isinstance(endpoint, str):
        raise ConfigurationError(f"otlp_endpoint must be a URL string, not {type(endpoint).__name__}.")
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"otlp_endpoint must be an OTLP/HTTP URL such as http://localhost:4318/v1/traces, "
            f"not {redact_url(endpoint)!r} (Opik has no gRPC ingest)."
        )
    if any(ch.isspace() or not ch.isprintable() or ord(ch) > 0x7E for ch in endpoint):
        raise ConfigurationError("otlp_endpoint contains spaces, control or non-ASCII characters.")
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise ConfigurationError(f"otlp_endpoint {redact_url(endpoint)!r} cannot be parsed.") from None
    if not parts.hostname:
        raise ConfigurationError("otlp_endpoint must name a host, e.g. http://localhost:4318/v1/traces.")
    if "@" in parts.netloc:
        raise ConfigurationError(
            f"otlp_endpoint {redact_url(endpoint)!r} contains credentials; remove them and pass what the "
            "collector needs in headers={...} instead (they are never logged or written to disk)."
        )
    return endpoint
