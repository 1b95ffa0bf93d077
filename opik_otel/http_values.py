"""What may go into an HTTP request to Opik, and what of it may be shown.

Header values are checked before any request is built (a line break would inject
headers; other control characters or non-Latin-1 text make ``http.client`` refuse every
request), and messages show URLs without credentials and secret headers not at all.
"""

import urllib.parse

from .errors import ConfigurationError

_SECRET_HEADER_MARKERS = ("authorization", "cookie", "key", "token", "secret", "password", "auth")


def redact_url(url: str) -> str:
    """``url`` without ``user:password@``, query string or fragment, fit for messages.

    Query strings are dropped as a whole because tokens are sometimes passed there.
    Text that does not parse as a URL loses everything up to an ``@``.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    except ValueError:
        return url.rpartition("@")[2]


def is_secret_header(name: str) -> bool:
    """Whether a header named ``name`` carries a secret (its value is never shown,
    logged or written to disk)."""
    lowered = name.lower()
    return any(marker in lowered for marker in _SECRET_HEADER_MARKERS)


def validate_header_value(value: object, *, setting: str, secret: bool) -> None:
    """Refuse values that would corrupt an HTTP header or crash the HTTP client.

    CR/LF would let a value inject extra headers; other control characters and
    characters outside Latin-1 make ``http.client`` refuse or crash on every request.
    Secret values are described, never quoted.
    """
    shown = "" if secret else f" ({value!r})"
    setting = setting[:1].upper() + setting[1:]
    if not isinstance(value, str):
        raise ConfigurationError(f"{setting} must be a string, got {type(value).__name__}.")
    if not value:
        raise ConfigurationError(f"{setting} is empty; leave it unset to use the default or give a value.")
    if value != value.strip():
        raise ConfigurationError(f"{setting}{shown} has leading or trailing whitespace; remove it.")
    for position, ch in enumerate(value):
        if ch in "\r\n":
            raise ConfigurationError(
                f"{setting}{shown} contains a line break at position {position}, which is not allowed in an "
                f"HTTP header (it could inject extra headers); remove it."
            )
        if not ch.isprintable():
            raise ConfigurationError(
                f"{setting}{shown} contains a control or non-printable character (U+{ord(ch):04X}) at "
                f"position {position}, which cannot be sent in an HTTP header; remove it."
            )
        if ord(ch) > 0xFF:
            raise ConfigurationError(
                f"{setting}{shown} contains the character U+{ord(ch):04X} at position {position}, which cannot "
                f"be sent in an HTTP header (only Latin-1 is allowed); use a name without it."
            )
