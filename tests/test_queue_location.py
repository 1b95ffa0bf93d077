"""Where the disk queue lives: private to its user, never through anything planted."""

import logging
import os
import stat
import sys
import tempfile

import pytest

from opik_otel.queue import DiskQueue, MemoryQueue, Record, open_queue
from opik_otel.queue.location import directory_name

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")

KEY = "https://opik.example/api|team"
OTHER_UID = 54321


def record(n=1):
    return Record(
        kind="spans",
        body=b"body-%d" % n,
        destination="https://opik.example/api/v1/private/otel/v1/traces",
        project="p",
        workspace="team",
        content_type="application/x-protobuf",
        content_encoding=None,
        items=1,
    )


@pytest.fixture
def places(tmp_path, monkeypatch):
    """An isolated cache home and temp directory."""
    cache = tmp_path / "cache"
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return cache, temp


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def opened(directory=None, max_bytes=1 << 20):
    queue = open_queue(directory, destination_key=KEY, max_bytes=max_bytes)
    return queue


def files_under(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_default_location_is_in_the_users_cache(places):
    cache, _ = places
    queue = opened()
    try:
        assert isinstance(queue, DiskQueue)
        assert queue.directory == str(cache / "opik_otel" / "spool" / directory_name(KEY))
    finally:
        queue.close()


def test_xdg_relative_value_is_ignored_for_home_cache(places, monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(home))
    queue = opened()
    try:
        assert queue.directory.startswith(str(home / ".cache" / "opik_otel"))
    finally:
        queue.close()


def test_umask_000_still_makes_every_level_0700_and_files_0600(places):
    cache, _ = places
    previous = os.umask(0)
    try:
        queue = opened()
        assert queue.append(record())
        stored = queue.oldest()
    finally:
        os.umask(previous)
    try:
        path = cache
        for level in ("", "opik_otel", "spool", directory_name(KEY)):
            path = path / level if level else path
            assert mode(path) == 0o700, path
        process_dirs = [p for p in os.listdir(queue.directory)]
        assert len(process_dirs) == 1
        process_dir = os.path.join(queue.directory, process_dirs[0])
        assert mode(process_dir) == 0o700
        for name in os.listdir(process_dir):
            assert mode(os.path.join(process_dir, name)) == 0o600, name
        assert stored.record == record()
    finally:
        queue.close()


def test_umask_077_still_lets_the_owner_write(places):
    previous = os.umask(0o777)
    try:
        queue = opened()
        assert queue.append(record())
        path = queue.directory
    finally:
        os.umask(previous)
    try:
        assert mode(path) == 0o700
        for directory, _, names in os.walk(path):
            assert mode(directory) == 0o700
            for name in names:
                assert mode(os.path.join(directory, name)) == 0o600, name
        assert queue.oldest().record == record()
    finally:
        queue.close()


@pytest.mark.parametrize("planted_mode", [0o777, 0o770, 0o722])
def test_directory_writable_by_others_is_refused(places, caplog, planted_mode):
    cache, temp = places
    planted = cache / "opik_otel"
    planted.mkdir(parents=True)
    os.chmod(planted, planted_mode)
    queue = opened()
    try:
        assert isinstance(queue, DiskQueue)
        assert not queue.directory.startswith(str(cache))
        assert queue.directory.startswith(str(temp / f"opik_otel-{os.geteuid()}"))
        assert any("writable by group or others" in w and str(planted) in w for w in warnings(caplog))
        queue.append(record())
        assert files_under(planted) == []
    finally:
        queue.close()


def test_directory_of_another_user_is_refused(places, caplog):
    cache, temp = places
    planted = cache / "opik_otel" / "spool"
    planted.mkdir(parents=True, mode=0o700)
    os.chown(planted, OTHER_UID, OTHER_UID)
    queue = opened()
    try:
        assert queue.directory.startswith(str(temp))
        assert any(f"owned by uid {OTHER_UID}" in w for w in warnings(caplog))
    finally:
        queue.close()


def test_symlink_at_the_default_path_is_not_followed(places, caplog, tmp_path):
    cache, temp = places
    attacker = tmp_path / "attacker"
    attacker.mkdir(mode=0o700)
    (cache / "opik_otel").mkdir(parents=True, mode=0o700)
    os.symlink(attacker, cache / "opik_otel" / "spool")
    queue = opened()
    try:
        queue.append(record())
        assert files_under(attacker) == []
        assert queue.directory.startswith(str(temp))
        assert any("symbolic link" in w for w in warnings(caplog))
    finally:
        queue.close()


def test_planted_temp_directory_too_means_a_fresh_private_directory(places, caplog):
    cache, temp = places
    (cache / "opik_otel").mkdir(parents=True)
    os.chmod(cache / "opik_otel", 0o777)
    planted = temp / f"opik_otel-{os.geteuid()}"
    planted.mkdir()
    os.chown(planted, OTHER_UID, -1)
    queue = opened()
    try:
        assert isinstance(queue, DiskQueue)
        assert os.path.dirname(queue.directory) == str(temp)
        assert queue.directory != str(planted) and mode(queue.directory) == 0o700
        assert queue.append(record()) and queue.oldest().record == record()
        assert any("fresh private directory" in w for w in warnings(caplog))
    finally:
        queue.close()


def test_existing_own_directory_readable_by_others_is_made_private(places):
    cache, _ = places
    mine = cache / "opik_otel"
    mine.mkdir(parents=True)
    os.chmod(mine, 0o755)
    queue = opened()
    try:
        assert queue.directory.startswith(str(mine))
        assert mode(mine) == 0o700
    finally:
        queue.close()


def test_explicit_directory_is_used_with_a_destination_subdirectory(tmp_path):
    chosen = tmp_path / "a" / "b" / "c"
    previous = os.umask(0)
    try:
        queue = opened(str(chosen))
    finally:
        os.umask(previous)
    try:
        assert queue.directory == str(chosen / directory_name(KEY))
        for path in (tmp_path / "a", tmp_path / "a" / "b", chosen, chosen / directory_name(KEY)):
            assert mode(path) == 0o700, path
    finally:
        queue.close()


def test_explicit_symlink_is_refused_for_a_fresh_private_directory(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    os.symlink(target, tmp_path / "link")
    queue = opened(str(tmp_path / "link"))
    try:
        queue.append(record())
        assert files_under(target) == []
        assert "symbolic link" in caplog.text and "fresh private directory" in caplog.text
    finally:
        queue.close()


@pytest.mark.parametrize("where", ["explicit", "default"])
def test_no_usable_directory_means_memory_with_one_warning(tmp_path, monkeypatch, caplog, where):
    # A path under a regular file cannot be created, even by root.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "temp"))
    queue = opened(str(blocker / "spool") if where == "explicit" else None)
    assert isinstance(queue, MemoryQueue) and queue.directory is None
    assert queue.append(record()) and queue.oldest().record == record()
    messages = warnings(caplog)
    assert len(messages) == 1 and "memory only" in messages[0]


def test_spool_directory_false_is_memory_and_says_so(caplog):
    caplog.set_level(logging.INFO, logger="opik_otel")
    queue = opened(False)
    assert isinstance(queue, MemoryQueue)
    assert "memory only" in caplog.text


def test_destinations_get_separate_directories(places):
    first = open_queue(None, destination_key="https://a/api|w", max_bytes=1 << 20)
    second = open_queue(None, destination_key="https://b/api|w", max_bytes=1 << 20)
    try:
        first.append(record(1))
        assert first.directory != second.directory
        assert second.claim_abandoned() == 0 and second.oldest() is None
    finally:
        first.close()
        second.close()
