"""Rate limiting for the package's warnings.

Bad input arrives once per request or per span, so an unthrottled warning would flood
the host application's logs. Calls stay plain ``LOGGER.warning("...%s...", arg)`` and
a filter on each module logger (filters are not inherited by child loggers) lets each distinct message through at most once per
interval, then reports how many repeats it held back.
"""

import logging
import time
from typing import Dict, Tuple

PACKAGE_LOGGER_NAME = "opik_otel"
DEFAULT_INTERVAL_SECONDS = 60.0


class RateLimitFilter(logging.Filter):
    """Let each (logger, template, args) through at most once per interval.

    It takes no lock: a lock held by another thread at ``fork`` would hang the child's
    first warning, while the worst a race between single dict operations can do here
    is let one repeat through.
    """

    def __init__(self, interval_seconds: float = DEFAULT_INTERVAL_SECONDS) -> None:
        super().__init__()
        self.interval_seconds = interval_seconds
        self._last_seen: Dict[Tuple[str, str, str], Tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            key = (record.name, str(record.msg), repr(record.args))
        except Exception:
            return True
        now = time.monotonic()
        last, held_back = self._last_seen.get(key, (None, 0))
        if last is not None and now - last < self.interval_seconds:
            self._last_seen[key] = (last, held_back + 1)
            return False
        if len(self._last_seen) > 1000:
            self._last_seen.clear()
        self._last_seen[key] = (now, 0)
        if held_back:
            record.msg = f"{record.msg} (repeated {held_back} more times in the last interval)"
        return True

    def reset(self) -> None:
        """Forget every message seen so far (used by tests)."""
        self._last_seen.clear()


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
