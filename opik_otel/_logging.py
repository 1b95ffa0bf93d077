"""Rate limiting and escaping for the package's log lines.

Bad input arrives once per request or per span, and a hostile client can make every
value different, so the limit is per *cause*: the call site's message template (or an
explicit ``rate_limit_key``), whatever its arguments. Calls stay plain
``LOGGER.warning("bad %s: %.60r", name, value)``; a filter on each module logger
(filters are not inherited by child loggers) lets each cause through at most once per
interval with the example values of that first occurrence, and reports how many it held
back on the next line of that cause. Arguments that are not numbers are shown cut short
and escaped, so a value can neither inject a line break or terminal escapes into the
host's logs nor make a line arbitrarily long.
"""

import logging
import numbers
import time
from typing import Any, Dict, Hashable, Mapping, Tuple

PACKAGE_LOGGER_NAME = "opik_otel"
DEFAULT_INTERVAL_SECONDS = 60.0
# ``extra={RATE_LIMIT_KEY: cause}`` limits a call site by ``cause`` instead of by its
# template, for sites whose template is a bare "%s" filled with different messages.
RATE_LIMIT_KEY = "opik_rate_limit_key"
# Longest text one argument contributes to a line: enough for a path, a URL or one of the
# exporter's own failure descriptions (which quote an exception text of up to 300).
MAX_SHOWN_CHARS = 1000

# A bound on distinct keys, reached only by callers that pass varying explicit keys.
_MAX_KEYS = 1000


class RateLimitFilter(logging.Filter):
    """Let each (logger, level, cause) through at most once per interval.

    A cause is the record's ``rate_limit_key`` when the call gives one, else its message
    template. It takes no lock: a lock held by another thread at ``fork`` would hang the
    child's first warning, while the worst a race between single dict operations can do
    here is let one repeat through or miscount one.
    """

    def __init__(self, interval_seconds: float = DEFAULT_INTERVAL_SECONDS) -> None:
        super().__init__()
        self.interval_seconds = interval_seconds
        self._last_seen: Dict[Tuple[str, int, Hashable], Tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            try:
                cause = getattr(record, RATE_LIMIT_KEY, None)
                key = (record.name, record.levelno, cause if cause is not None else str(record.msg))
                hash(key)
            except Exception:
                key = (record.name, record.levelno, "unhashable")
            now = time.monotonic()
            last, held_back = self._last_seen.get(key, (None, 0))
            if last is not None and now - last < self.interval_seconds:
                self._last_seen[key] = (last, held_back + 1)
                return False
            if len(self._last_seen) > _MAX_KEYS:
                self._last_seen.clear()
            self._last_seen[key] = (now, 0)
            if held_back:
                record.msg = (
                    f"{record.msg} ({held_back} more like this held back in the last "
                    f"{self.interval_seconds:g} s)"
                )
        record.args = shown_args(record.args)
        return True

    def reset(self) -> None:
        """Forget every message seen so far (used by tests)."""
        self._last_seen.clear()


class _Shown:
    """An argument as a log line may show it: ``%s`` and ``%r`` both give escaped,
    bounded text, and an object whose ``str``/``repr`` raises cannot break the line."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return _render(self.value, str)

    def __repr__(self) -> str:
        return _render(self.value, repr)


def _render(value: Any, how: Any) -> str:
    try:
        text = how(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
    return escaped(text) if isinstance(text, str) else f"<unprintable {type(value).__name__}>"


def escaped(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters (marked with ``…``) and with every
    non-printable character (line breaks, terminal escapes, lone surrogates) written as
    its Python escape, so that it stays on one line and shows what it is."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def shown_args(args: Any) -> Any:
    """Log-record arguments wrapped for safe display, except numbers and short
    printable strings (most arguments: header and attribute names), kept as they are."""
    if isinstance(args, tuple):
        return tuple(_shown(arg) for arg in args)
    if isinstance(args, Mapping):
        return {key: _shown(arg) for key, arg in args.items()}
    return args


def _shown(arg: Any) -> Any:
    kind = type(arg)
    if kind is int or kind is float or kind is bool:
        return arg
    if kind is str:
        return arg if len(arg) <= MAX_SHOWN_CHARS and arg.isprintable() else _Shown(arg)
    # Other numbers too (enums, numpy scalars): a "%d" or "%.1f" needs the number itself.
    return arg if isinstance(arg, numbers.Number) else _Shown(arg)


def get_logger(name: str) -> logging.Logger:
    """Return the logger ``name`` with a rate-limiting filter installed once."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
        logger.addFilter(RateLimitFilter())
    return logger


def reset_rate_limits() -> None:
    """Forget every message seen by the package's loggers (used by tests)."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith(PACKAGE_LOGGER_NAME) and isinstance(logger, logging.Logger):
            for f in logger.filters:
                if isinstance(f, RateLimitFilter):
                    f.reset()
