"""Opik SDK client for tests/test_multi_service.py (real ``opik`` package, no OTel).

Inside ``@opik.track`` it takes ``opik_context.get_distributed_trace_headers()`` (the
underscore headers the SDK documents) and POSTs a question to ``<url>/ask``; with
``--hyphenated`` it adds the hyphenated copies the README recommends for servers that
drop underscore header names. Prints one JSON line: the SDK's trace and span ids, the
headers sent and the reply.

Usage: python flow_sdk_client.py URL [--hyphenated]
"""

import json
import sys

import opik
import requests
from opik import opik_context


@opik.track(name="sdk-client")
def ask(url: str, hyphenated: bool) -> dict:
    headers = dict(opik_context.get_distributed_trace_headers())
    if hyphenated:
        headers.update({name.replace("_", "-"): value for name, value in headers.items()})
    response = requests.post(f"{url}/ask", json={"question": "What is Opik?"}, headers=headers, timeout=30)
    response.raise_for_status()
    return {
        "trace_id": opik_context.get_current_trace_data().id,
        "span_id": opik_context.get_current_span_data().id,
        "headers": headers,
        "reply": response.json(),
    }


def main() -> int:
    result = ask(sys.argv[1], "--hyphenated" in sys.argv[2:])
    opik.flush_tracker()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
