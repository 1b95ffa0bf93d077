"""JSON text Opik's Java backend parses (contract §10)."""

import json
import math
from typing import Any

_MAX_JSON_DEPTH = 64


def dump_json(document: Any) -> str:
    """JSON Opik's Java backend parses: no NaN/Infinity, anything odd as a string."""
    try:
        return json.dumps(document, allow_nan=False, default=str)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(_json_safe(document, 0), allow_nan=False, default=str)


def _json_safe(value: Any, depth: int) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if depth >= _MAX_JSON_DEPTH:
        return str(value)
    if isinstance(value, dict):
        return {str(key): _json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, depth + 1) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)

