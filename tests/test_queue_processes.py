"""The disk queue across real processes: SIGKILL, sharing a directory, fork."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from opik_otel.queue import DiskQueue, Record, open_queue

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX processes")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from opik_otel.queue import Record, open_queue

    mode, directory, prefix = sys.argv[1:4]

    def record(body):
        return Record(kind="spans", body=body.encode(), destination="http://127.0.0.1:9/v1/traces",
                      project="p", workspace="default", content_type="application/x-protobuf",
                      content_encoding=None, items=1)

    queue = open_queue(directory, destination_key="k", max_bytes=1 << 30)

    def drain():
        seen = []
        while True:
            stored = queue.oldest()
            if stored is None:
                return seen
            seen.append(stored.record.body.decode())
            queue.remove(stored)

    if mode == "write-forever":
        n = 0
        while True:
            assert queue.append(record("%s-%d" % (prefix, n)))
            print(n, flush=True)
            n += 1
    elif mode == "write-and-wait":
        for n in range(int(sys.argv[4])):
            assert queue.append(record("%s-%d" % (prefix, n)))
        print("ready", flush=True)
        sys.stdin.readline()
        os._exit(0)  # dies holding its records, like a process that could not deliver
    elif mode == "peek":
        print(json.dumps({"claimed": queue.claim_abandoned(), "oldest": queue.oldest() is not None}))
    elif mode == "append-and-drain":
        for n in range(int(sys.argv[4])):
            queue.append(record("%s-%d" % (prefix, n)))
        sys.stdin.readline()  # start together
        delivered = []
        for _ in range(20):
            queue.claim_abandoned()
            delivered += drain()
            time.sleep(0.01)
        print(json.dumps({"delivered": delivered, "stats": queue.stats()}))
        queue.close()
    elif mode == "tidy-forever":
        print("tidying", flush=True)
        while True:
            queue.claim_abandoned()  # also removes staging directories of dead creators
    elif mode == "fork-orphan":
        for n in range(3):
            queue.append(record("%s-%d" % (prefix, n)))
        read, write = os.pipe()
        parent = os.getpid()
        if os.fork() == 0:
            signal.alarm(60)
            os.close(write)
            os.read(read, 1)  # EOF once the parent is exiting
            # Its flocks are released with its descriptors, all closed by the time the
            # kernel hands this orphan to a new parent.
            while os.getppid() == parent:
                time.sleep(0.005)
            print(json.dumps({"claimed": queue.claim_abandoned(), "delivered": drain()}), flush=True)
            os._exit(0)
        os._exit(0)
    """
)


@pytest.fixture
def run(tmp_path):
    script = tmp_path / "queue_program.py"
    script.write_text(PROGRAM)
    spool = str(tmp_path / "spool")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    started = []

    def start(*args):
        process = subprocess.Popen(
            [sys.executable, str(script), args[0], spool, *map(str, args[1:])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        started.append(process)
        return process

    start.spool = spool
    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def output(process, timeout=60):
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("after", [1, 40, 200])
def test_sigkill_right_after_append_loses_nothing(run, after):
    writer = run("write-forever", "w")
    acknowledged = []
    while len(acknowledged) < after:
        acknowledged.append(int(writer.stdout.readline()))
    writer.send_signal(signal.SIGKILL)
    acknowledged += [int(line) for line in writer.stdout.read().split()]
    writer.wait()
    reader = run("append-and-drain", "r", 0)
    reader.stdin.write("\n")
    reader.stdin.flush()
    result = output(reader)
    delivered = result["delivered"]
    # Every record whose append had returned is there, once, in order, and nothing is damaged.
    assert [f"w-{n}" for n in acknowledged] == delivered[: len(acknowledged)]
    assert len(delivered) - len(acknowledged) <= 1  # at most the one being written at the kill
    assert len(set(delivered)) == len(delivered)
    assert result["stats"]["quarantined"] == 0


def test_two_processes_share_a_directory_without_sending_twice(run):
    writer = run("write-and-wait", "w", 50)
    assert writer.stdout.readline().strip() == "ready"
    # While the writer lives, nobody else touches its records.
    assert output(run("peek", "x")) == {"claimed": 0, "oldest": False}
    writer.stdin.write("\n")
    writer.stdin.flush()
    writer.wait()
    # Two live processes, each with records of its own, race for the dead one's.
    first, second = run("append-and-drain", "a", 30), run("append-and-drain", "b", 30)
    for process in (first, second):
        process.stdin.write("\n")
        process.stdin.flush()
    one, two = output(first)["delivered"], output(second)["delivered"]
    assert [x for x in one if x.startswith("a-")] == [f"a-{n}" for n in range(30)]
    assert [x for x in two if x.startswith("b-")] == [f"b-{n}" for n in range(30)]
    assert not [x for x in one if x.startswith("b-")] and not [x for x in two if x.startswith("a-")]
    from_writer = [x for x in one + two if x.startswith("w-")]
    assert sorted(from_writer) == sorted(f"w-{n}" for n in range(50))  # all, each once
    assert output(run("peek", "x")) == {"claimed": 0, "oldest": False}


def test_forked_child_claims_its_parents_records_only_once_the_parent_is_gone(run):
    result = output(run("fork-orphan", "parent"))
    assert result == {"claimed": 3, "delivered": ["parent-0", "parent-1", "parent-2"]}


def record(body):
    return Record(
        kind="spans",
        body=body,
        destination="http://127.0.0.1:9/v1/traces",
        project="p",
        workspace="default",
        content_type="application/x-protobuf",
        content_encoding=None,
        items=1,
    )


def test_processes_tidying_the_directory_never_break_another_ones_first_append(run):
    # A claim pass removes the half-built directories of processes that died while
    # creating theirs; a live creator's must never look like one (it lost the first
    # record of a fresh process: a forked child's trace rows).
    tidiers = [run("tidy-forever", f"tidier{k}") for k in range(2)]
    for tidier in tidiers:
        assert tidier.stdout.readline().strip() == "tidying"
    failed = 0
    for n in range(1000):
        queue = open_queue(run.spool, destination_key="k", max_bytes=1 << 30)
        failed += not queue.append(record(b"first-%d" % n))
        queue.close()
    assert failed == 0
    assert all(tidier.poll() is None for tidier in tidiers)


def test_fork_while_a_thread_appends(tmp_path):
    queue = open_queue(str(tmp_path / "spool"), destination_key="k", max_bytes=1 << 30)
    assert isinstance(queue, DiskQueue)
    appended = []
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            if queue.append(record(b"parent-%d" % n)):
                appended.append(b"parent-%d" % n)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for round_ in range(5):
            time.sleep(0.02)
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: a queue of its own; the parent's records are not its to send
                code = 1
                signal.alarm(30)  # a child deadlocked by a broken queue must not outlive the test
                try:
                    os.close(read)
                    saw_parent = queue.oldest() is not None or len(queue) != 0
                    for n in range(3):
                        queue.append(record(b"child-%d" % n))
                    delivered = []
                    while True:
                        stored = queue.oldest()
                        if stored is None:
                            break
                        delivered.append(stored.record.body)
                        queue.remove(stored)
                    ok = not saw_parent and delivered == [b"child-%d" % n for n in range(3)]
                    os.write(write, b"1" if ok else b"0")
                    code = 0
                finally:
                    os._exit(code)
            os.close(write)
            answer = os.read(read, 1)
            os.close(read)
            _, status = os.waitpid(pid, 0)
            assert answer == b"1" and status == 0, f"child {round_}"
    finally:
        stop.set()
        thread.join()
    delivered = []
    while True:
        stored = queue.oldest()
        if stored is None:
            break
        delivered.append(stored.record.body)
        queue.remove(stored)
    queue.close()
    assert delivered == appended and len(appended) > 0
