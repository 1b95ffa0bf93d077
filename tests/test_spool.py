import logging
import multiprocessing
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from opik_otel._logging import reset_rate_limits
from opik_otel.spool import DiskSpool, SpoolEntry

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock-based spool")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    reset_rate_limits()
    yield
    reset_rate_limits()


@pytest.fixture
def root(tmp_path):
    return tmp_path / "spool"


def make(root, **kwargs):
    kwargs.setdefault("claim_interval", 0.0)
    return DiskSpool(root, **kwargs)


def drain(spool):
    """Peek/remove until empty; return the bodies in replay order."""
    bodies = []
    while True:
        entry = spool.peek_oldest()
        if entry is None:
            return bodies
        bodies.append(entry.body)
        assert spool.remove(entry)


def process_dirs(root):
    return sorted(n for n in os.listdir(root) if n.startswith("p"))


def record_files(root):
    found = []
    for directory in process_dirs(root):
        found += [
            os.path.join(root, directory, n)
            for n in os.listdir(os.path.join(root, directory))
            if n.endswith(".rec")
        ]
    return found


# --- basic FIFO behaviour ----------------------------------------------------------------------


def test_constructor_does_no_io(root):
    DiskSpool(root)
    assert not root.exists()


def test_fifo_roundtrip(root):
    spool = make(root)
    assert len(spool) == 0 and spool.peek_oldest() is None
    for i in range(5):
        assert spool.append("otlp", f"body-{i}".encode(), {"projectName": "p"})
    assert len(spool) == 5
    first = spool.peek_oldest()
    assert isinstance(first, SpoolEntry)
    assert (first.kind, first.body) == ("otlp", b"body-0")
    assert dict(first.headers) == {"projectName": "p"}
    # Peeking does not consume.
    assert spool.peek_oldest() == first
    assert drain(spool) == [f"body-{i}".encode() for i in range(5)]
    assert len(spool) == 0 and spool.size_bytes == 0
    assert record_files(root) == []


def test_kinds_and_binary_bodies(root):
    spool = make(root)
    payload = bytes(range(256)) * 100 + b"\n\n\x00"
    spool.append("otlp", payload)
    spool.append("traces", b'{"traces": []}', {"Content-Type": "application/json"})
    entry = spool.peek_oldest()
    assert entry.kind == "otlp" and entry.body == payload and dict(entry.headers) == {}
    spool.remove(entry)
    entry = spool.peek_oldest()
    assert entry.kind == "traces" and entry.headers["Content-Type"] == "application/json"


def test_size_bytes_counts_files(root):
    spool = make(root)
    spool.append("otlp", b"x" * 1000)
    spool.append("otlp", b"y" * 2000)
    on_disk = sum(os.path.getsize(p) for p in record_files(root))
    assert spool.size_bytes == on_disk
    assert 3000 < on_disk < 3400


def test_accepts_bytearray_and_rejects_wrong_types(root):
    spool = make(root)
    assert spool.append("otlp", bytearray(b"abc"))
    assert spool.peek_oldest().body == b"abc"
    with pytest.raises(TypeError):
        spool.append("otlp", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        spool.append(1, b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DiskSpool(root, max_bytes=0)


def test_file_names_sort_in_append_order(root):
    spool = make(root)
    for i in range(300):
        spool.append("otlp", str(i).encode())
    names = sorted(os.path.basename(p) for p in record_files(root))
    bodies = []
    directory = os.path.join(root, process_dirs(root)[0])
    for name in names:
        with open(os.path.join(directory, name), "rb") as file:
            bodies.append(file.read().split(b"\n", 1)[1])
    assert bodies == [str(i).encode() for i in range(300)]


def test_remove_unknown_or_twice(root):
    spool = make(root)
    spool.append("otlp", b"a")
    entry = spool.peek_oldest()
    assert spool.remove(entry)
    assert not spool.remove(entry)
    assert not spool.remove(SpoolEntry("otlp", {}, b"", "p1-abc/nope.rec"))
    assert not spool.remove(SpoolEntry("otlp", {}, b"", "garbage"))


def test_remove_out_of_order(root):
    spool = make(root)
    spool.append("otlp", b"a")
    spool.append("otlp", b"b")
    spool.append("otlp", b"c")
    first = spool.peek_oldest()
    spool.remove(first)
    second = spool.peek_oldest()
    spool.append("otlp", b"d")
    assert spool.remove(second)
    assert drain(spool) == [b"c", b"d"]


# --- security ----------------------------------------------------------------------------------


def test_authorization_never_reaches_disk(root):
    spool = make(root)
    headers = {
        "Authorization": "super-secret-key",
        "proxy-authorization": "proxy-secret",
        "Cookie": "session=cookie-secret",
        "Comet-Workspace": "ws",
        "projectName": "My Project",
    }
    spool.append("otlp", b"body", headers)
    for path in record_files(root):
        with open(path, "rb") as file:
            data = file.read()
        assert b"secret" not in data
    entry = spool.peek_oldest()
    assert dict(entry.headers) == {"Comet-Workspace": "ws", "projectName": "My Project"}
    # The caller's mapping is left alone.
    assert headers["Authorization"] == "super-secret-key"


def test_permissions(root):
    old_umask = os.umask(0)
    try:
        spool = make(root)
        spool.append("otlp", b"x")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    own = os.path.join(root, process_dirs(root)[0])
    assert stat.S_IMODE(os.stat(own).st_mode) == 0o700
    for path in record_files(root) + [os.path.join(own, ".lock")]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# --- size cap ----------------------------------------------------------------------------------


def test_cap_drops_oldest_and_counts(root, caplog):
    spool = make(root, max_bytes=10_000)
    for i in range(30):
        assert spool.append("otlp", bytes([65 + i % 26]) * 1000)
    assert spool.size_bytes <= 10_000
    kept = len(spool)
    assert 5 <= kept < 10
    assert spool.dropped_records == 30 - kept
    assert spool.dropped_bytes > 1000 * (30 - kept)
    remaining = drain(spool)
    assert remaining == [bytes([65 + i % 26]) * 1000 for i in range(30 - kept, 30)]
    full_warnings = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full_warnings) == 1
    assert str(spool.max_bytes) in full_warnings[0].getMessage()


def test_oversized_record_is_dropped_not_the_others(root, caplog):
    spool = make(root, max_bytes=5_000)
    spool.append("otlp", b"small")
    assert not spool.append("otlp", b"x" * 6_000)
    assert spool.dropped_records == 1
    assert spool.dropped_bytes > 6_000
    assert drain(spool) == [b"small"]
    assert any("larger than the whole" in r.getMessage() for r in caplog.records)


# --- robustness --------------------------------------------------------------------------------


def test_corrupt_and_partial_records_are_skipped_and_deleted(root, caplog):
    spool = make(root)
    for body in (b"one", b"two", b"three", b"four"):
        spool.append("otlp", body * 100)
    paths = sorted(record_files(root))
    with open(paths[0], "r+b") as file:  # truncated body
        file.truncate(os.path.getsize(paths[0]) - 10)
    with open(paths[1], "wb") as file:  # garbage
        file.write(b"\x00\xffnot a record")
    with open(paths[2], "r+b") as file:  # flipped body byte: CRC mismatch
        file.seek(-1, os.SEEK_END)
        file.write(b"!")
    assert drain(spool) == [b"four" * 100]
    assert spool.dropped_records == 3
    assert not any(os.path.exists(p) for p in paths[:3])
    assert any("corrupt" in r.getMessage() for r in caplog.records)


def test_record_deleted_behind_our_back(root):
    spool = make(root)
    spool.append("otlp", b"a")
    spool.append("otlp", b"b")
    os.unlink(sorted(record_files(root))[0])
    assert drain(spool) == [b"b"]
    assert spool.size_bytes == 0


def test_directory_removed_while_running(root):
    spool = make(root)
    spool.append("otlp", b"a")
    for directory in process_dirs(root):
        for name in os.listdir(os.path.join(root, directory)):
            os.unlink(os.path.join(root, directory, name))
        os.rmdir(os.path.join(root, directory))
    assert spool.append("otlp", b"b")
    assert drain(spool) == [b"b"]


def test_unwritable_directory_never_raises(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    spool = make(blocker / "spool")
    assert not spool.append("otlp", b"x")
    assert spool.peek_oldest() is None
    assert len(spool) == 0
    assert spool.dropped_records == 1


def test_fsync_mode(root):
    spool = make(root, fsync=True)
    spool.append("otlp", b"durable")
    assert drain(spool) == [b"durable"]


def test_threads(root):
    spool = make(root)
    per_thread = 50

    def worker(n):
        for i in range(per_thread):
            spool.append("otlp", f"{n}:{i}".encode())

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bodies = [b.decode() for b in drain(spool)]
    assert len(bodies) == len(set(bodies)) == 8 * per_thread
    for n in range(8):
        mine = [int(b.split(":")[1]) for b in bodies if b.startswith(f"{n}:")]
        assert mine == list(range(per_thread))


def test_concurrent_readers_and_writers(root):
    spool = make(root)
    received = []
    done = threading.Event()

    def reader():
        while not done.is_set() or len(spool):
            entry = spool.peek_oldest()
            if entry is None:
                time.sleep(0.001)
                continue
            if spool.remove(entry):
                received.append(entry.body)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(200):
        spool.append("otlp", str(i).encode())
    done.set()
    thread.join(10)
    assert received == [str(i).encode() for i in range(200)]


# --- several spools, restarts, processes -------------------------------------------------------


def test_closed_spool_data_is_replayed_by_next_instance(root):
    first = make(root)
    first.append("otlp", b"old-1")
    first.append("otlp", b"old-2")
    first.close()
    second = make(root)
    second.append("otlp", b"new")
    assert len(second) == 3
    assert drain(second) == [b"old-1", b"old-2", b"new"]
    # The drained directory of the earlier instance is gone.
    assert len(process_dirs(root)) == 1


def test_close_removes_empty_own_directory(root):
    with make(root) as spool:
        spool.append("otlp", b"x")
        drain(spool)
    assert process_dirs(root) == []


def test_live_spool_directory_is_not_claimed(root):
    owner = make(root)
    owner.append("otlp", b"mine")
    other = make(root)
    assert other.claim_abandoned() == 0
    assert other.peek_oldest() is None
    assert drain(owner) == [b"mine"]


def test_dead_directory_is_claimed_exactly_once(root):
    first = make(root)
    for i in range(3):
        first.append("otlp", str(i).encode())
    first.close()
    a, b = make(root), make(root)
    counts = [a.claim_abandoned(), b.claim_abandoned()]
    assert sorted(counts) == [0, 3]
    winner = a if counts[0] else b
    assert drain(winner) == [b"0", b"1", b"2"]


def test_claim_respects_interval(root):
    first = make(root)
    first.append("otlp", b"x")
    late = DiskSpool(root, claim_interval=3600)
    assert len(late) == 0  # first look: nothing abandoned yet
    first.close()
    assert len(late) == 0  # not looked again
    assert late.claim_abandoned() == 1


def test_claimed_data_counts_against_cap(root):
    first = make(root)
    for i in range(10):
        first.append("otlp", b"z" * 1000)
    first.close()
    small = make(root, max_bytes=3_500)
    assert len(small) == 3
    assert small.dropped_records == 7


def test_stale_staging_and_temp_files_are_cleaned(root):
    first = make(root)
    first.append("otlp", b"x")
    own = os.path.join(root, process_dirs(root)[0])
    partial = ".tmp-00000000000000000001-0000000001-000000000001.rec"
    with open(os.path.join(own, partial), "wb") as file:
        file.write(b"half written")
    first.close()
    staging = os.path.join(root, ".new-p1-deadbeef")
    os.mkdir(staging)
    old = time.time() - 3600
    os.utime(staging, (old, old))
    second = make(root)
    assert drain(second) == [b"x"]
    assert not os.path.exists(staging)
    assert process_dirs(root) == []


def _child_appends(spool, parent_entry, queue):
    # Runs in a forked child that inherited the parent's spool object.
    try:
        claimed = spool.claim_abandoned()
        removed_parent = spool.remove(parent_entry)
        seen = spool.peek_oldest()
        spool.append("otlp", b"child-1")
        spool.append("otlp", b"child-2")
        queue.put((claimed, removed_parent, seen is None, len(spool)))
    except BaseException as error:  # pragma: no cover - reported to the parent
        queue.put(repr(error))


def test_fork_child_gets_its_own_directory(root):
    spool = make(root)
    spool.append("otlp", b"parent-before-fork")
    parent_entry = spool.peek_oldest()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_appends, args=(spool, parent_entry, queue))
    child.start()
    result = queue.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0
    # The child could not take the live parent's directory, nor delete its records.
    assert result == (0, False, True, 2)
    assert len(process_dirs(root)) == 2
    spool.append("otlp", b"parent-after-fork")
    # The dead child's records are claimed and merged in time order.
    assert drain(spool) == [b"parent-before-fork", b"child-1", b"child-2", b"parent-after-fork"]
    assert len(process_dirs(root)) == 1


def test_raw_os_fork(root):
    spool = make(root)
    spool.append("otlp", b"p1")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 1
        try:
            os.close(read_end)
            ok = spool.append("otlp", b"c1") and len(spool) == 1
            os.write(write_end, b"ok" if ok else b"bad")
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == b"ok"
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert drain(spool) == [b"p1", b"c1"]


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from opik_otel.spool import DiskSpool
    spool = DiskSpool({root!r})
    for i in range(3):
        spool.append("otlp", b"previous-%d" % i,
                     {{"Authorization": "secret", "projectName": "proj"}})
    print("ready", flush=True)
    if {wait!r}:
        sys.stdin.read()
    """
)


def run_writer(root, wait):
    script = WRITER.format(repo=REPO_ROOT, root=str(root), wait=wait)
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_previous_run_left_data(root):
    writer = run_writer(root, wait=False)
    assert writer.stdout.readline().strip() == "ready"
    assert writer.wait(30) == 0
    writer.stdout.close()
    writer.stdin.close()

    spool = make(root)
    spool.append("otlp", b"this-run")
    entry = spool.peek_oldest()
    assert entry.body == b"previous-0"
    assert dict(entry.headers) == {"projectName": "proj"}
    assert drain(spool) == [b"previous-0", b"previous-1", b"previous-2", b"this-run"]
    assert len(process_dirs(root)) == 1


def test_running_process_keeps_its_data_until_it_dies(root):
    writer = run_writer(root, wait=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        spool = make(root)
        assert spool.claim_abandoned() == 0
        assert spool.peek_oldest() is None
    finally:
        writer.kill()
        writer.wait(30)
        writer.stdout.close()
        writer.stdin.close()
    assert spool.claim_abandoned() == 3
    assert drain(spool) == [b"previous-0", b"previous-1", b"previous-2"]


def test_logging_is_quiet_for_normal_use(root, caplog):
    caplog.set_level(logging.WARNING)
    spool = make(root)
    for i in range(10):
        spool.append("otlp", b"x")
    drain(spool)
    assert caplog.records == []


def test_usable_after_close(root):
    spool = make(root)
    spool.append("otlp", b"before-close")
    spool.close()
    spool.append("otlp", b"after-close")
    assert drain(spool) == [b"before-close", b"after-close"]
