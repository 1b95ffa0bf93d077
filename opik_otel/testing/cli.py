"""``python -m opik_otel.testing``: a throw-away LocalOpik in a terminal."""

import argparse
import signal
import sys
import threading
import time
from typing import Any, Optional, Sequence

from opik_otel.testing.server import LocalOpik


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a LocalOpik in the foreground; Ctrl-C prints every trace tree received.

    Returns 0 after Ctrl-C, 2 when the port cannot be bound (one line on stderr).
    """
    parser = argparse.ArgumentParser(
        prog="python -m opik_otel.testing",
        description="Local Opik ingest server for trying out OTel instrumentation.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free)")
    parser.add_argument("--api-key", default=None, help="require this Authorization header")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    # In place before anything is printed or bound, so a Ctrl-C at any moment from here
    # on ends in the same orderly way instead of a KeyboardInterrupt traceback.
    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        return _serve(LocalOpik(api_key=args.api_key, port=args.port), args.port, stop)
    finally:
        signal.signal(signal.SIGINT, previous)


def _serve(opik: LocalOpik, port: int, stop: threading.Event) -> int:
    try:
        opik.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(
            f"LocalOpik cannot listen on 127.0.0.1:{port}: {reason}. "
            "Stop whatever uses that port or pick another with --port (0: any free port).",
            file=sys.stderr,
            flush=True,
        )
        return 2
    try:
        print(f"LocalOpik listening on {opik.url}", flush=True)
        print(f"  OPIK_URL_OVERRIDE={opik.url}", flush=True)
        print(f"  OTEL_EXPORTER_OTLP_ENDPOINT={opik.otlp_endpoint}", flush=True)
        print("Press Ctrl-C to stop and print the traces received.", flush=True)
        while not stop.is_set():
            time.sleep(0.1)
        print(opik.trees() or "(no traces received)", flush=True)
    finally:
        opik.stop()
    return 0
