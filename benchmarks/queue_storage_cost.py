"""Cost of the delivery queue per record and per span: disk against memory, side by side.

Run: ``python benchmarks/queue_cost.py [--rounds N] [--directory DIR]``

Each round pushes the same records through a fresh queue of each kind: ``append`` (what
the export thread pays before ``export()`` returns) and then ``oldest`` + ``remove``
(what the sender pays around each request). Two shapes: a typical 512-span batch (an
incompressible body of ~200 KB, as gzip'd OTLP of 512 spans is) and a small one (1 span,
~600 B). Rounds are interleaved so machine noise hits both queues alike; the medians of
per-round means print at the end, with the disk/memory ratio. The disk queue writes
under ``--directory`` (default: the system temp directory), so the figures are those of
that filesystem's page cache: records are renamed into place, not fsync'ed.
"""

import argparse
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Tuple

from opik_otel.queue import DeliveryQueue, DiskQueue, MemoryQueue, Record, open_queue

SHAPES = {
    # name: (body bytes, spans per record, records per round)
    "512-span batch, 200 KB": (200 * 1024, 512, 100),
    "1-span batch, 600 B": (600, 1, 2000),
}


def make_records(size: int, items: int, count: int) -> List[Record]:
    return [
        Record(
            kind="spans",
            body=os.urandom(size),
            destination="https://opik.example/api/v1/private/otel/v1/traces",
            project="Default Project",
            workspace="default",
            content_type="application/x-protobuf",
            content_encoding="gzip",
            items=items,
        )
        for _ in range(count)
    ]


def one_round(queue: DeliveryQueue, records: List[Record]) -> Tuple[float, float]:
    """Seconds per record for append, and for oldest + remove."""
    start = time.perf_counter()
    for record in records:
        if not queue.append(record):
            raise RuntimeError("append failed")
    appended = time.perf_counter()
    while True:
        stored = queue.oldest()
        if stored is None:
            break
        queue.remove(stored)
    drained = time.perf_counter()
    queue.close()
    return (appended - start) / len(records), (drained - appended) / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--directory", default=None, help="where the disk queue writes")
    args = parser.parse_args()
    parent = args.directory or tempfile.gettempdir()
    with tempfile.TemporaryDirectory(dir=parent) as root:
        factories: Dict[str, Callable[[], DeliveryQueue]] = {
            "memory": lambda: MemoryQueue(max_bytes=1 << 30),
            "disk": lambda: open_queue(root, destination_key="bench", max_bytes=1 << 30),
        }
        probe = factories["disk"]()
        if not isinstance(probe, DiskQueue):
            raise SystemExit("no usable directory for the disk queue")
        print(f"disk queue in {probe.directory}")
        probe.close()
        for shape, (size, items, count) in SHAPES.items():
            records = make_records(size, items, count)
            results: Dict[str, List[Tuple[float, float]]] = {name: [] for name in factories}
            for _ in range(args.rounds):
                for name, factory in factories.items():
                    results[name].append(one_round(factory(), records))
            print(f"\n{shape}: {count} records x {args.rounds} rounds (median of round means)")
            print(f"{'queue':8} {'append/rec':>12} {'oldest+remove/rec':>18} {'total/rec':>11} {'total/span':>11}")
            totals = {}
            for name, rounds in results.items():
                append = statistics.median(a for a, _ in rounds)
                drain = statistics.median(d for _, d in rounds)
                total = statistics.median(a + d for a, d in rounds)
                totals[name] = total
                print(
                    f"{name:8} {append * 1e6:10.1f}us {drain * 1e6:16.1f}us "
                    f"{total * 1e6:9.1f}us {total / items * 1e6:9.3f}us"
                )
            print(f"disk/memory total ratio: {totals['disk'] / totals['memory']:.1f}x")


if __name__ == "__main__":
    main()
