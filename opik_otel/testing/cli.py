"""``python -m opik_otel.testing``: a throw-away LocalOpik in a terminal."""

import argparse
import time
from typing import Optional, Sequence

from opik_otel.testing.server import LocalOpik


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a LocalOpik in the foreground; Ctrl-C prints every trace tree received."""
    parser = argparse.ArgumentParser(
        prog="python -m opik_otel.testing",
        description="Local Opik ingest server for trying out OTel instrumentation.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free)")
    parser.add_argument("--api-key", default=None, help="require this Authorization header")
    args = parser.parse_args(argv)
    with LocalOpik(api_key=args.api_key, port=args.port) as opik:
        print(f"LocalOpik listening on {opik.url}", flush=True)
        print(f"  OPIK_URL_OVERRIDE={opik.url}", flush=True)
        print(f"  OTEL_EXPORTER_OTLP_ENDPOINT={opik.otlp_endpoint}", flush=True)
        print("Press Ctrl-C to stop and print the traces received.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        print(opik.trees() or "(no traces received)", flush=True)
    return 0

