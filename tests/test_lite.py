"""The embedded engine: which Milvus Lite is pinned where, its lock, and dbs it cannot open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import FLOATING_VECTOR_PAGES
from packaging.requirements import Requirement

from rag.store import MilvusStore, StoreError, StoreLockedError, connect, disconnect, lite

REPO = Path(__file__).resolve().parents[1]
PAGE = FLOATING_VECTOR_PAGES / "hnsw.md"


def pinned_engines(platform: str) -> list[str]:
    """The ``milvus-lite`` pins that pyproject.toml gives a machine of ``sys_platform``."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    environment = {"sys_platform": platform, "platform_system": platform, "extra": ""}
    pins = []
    for line in project["dependencies"]:
        requirement = Requirement(line)
        marker = requirement.marker
        if requirement.name == "milvus-lite" and (marker is None or marker.evaluate(environment)):
            pins.append(str(requirement.specifier))
    return pins


def test_the_cpp_engine_is_pinned_where_it_has_wheels_and_the_python_engine_elsewhere():
    assert pinned_engines("linux") == ["==2.5.1"]
    assert pinned_engines("darwin") == ["==2.5.1"]
    assert pinned_engines("win32") == ["==3.2.2"]


def test_this_machine_runs_the_cpp_engine():
    engine = lite.engine()
    assert engine.version == "2.5.1" and engine.native
    assert engine.name == "Milvus Lite 2.5.1 (C++)"


def test_a_db_of_the_other_engine_is_refused_with_the_way_out_and_left_as_it_is(tmp_path):
    old = tmp_path / "milvus.db"  # Milvus Lite 3.x keeps a db as a folder
    old.mkdir()
    (old / "LOCK").write_text("")
    (old / "manifest.json").write_text('{"collections": ["docs"]}')
    before = {p.name: p.read_bytes() for p in old.iterdir()}

    with pytest.raises(StoreError) as raised:
        MilvusStore.open(str(old), "docs")

    message = str(raised.value)
    assert "written by Milvus Lite 3.x" in message and "2.5.1" in message
    assert "--db data/new.db" in message and "left as it is" in message
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before


def test_the_cli_on_a_db_of_the_other_engine_exits_2_without_a_traceback(tmp_path):
    old = tmp_path / "milvus.db"
    old.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "rag", "search", "hnsw", "--db", str(old)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Ingest your documents again into a new path" in " ".join(result.stderr.split())
    assert list(old.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [("docs", "must end in .db"), ("my docs.db", "at most 36"), ("x" * 40 + ".db", "at most 36")],
)
def test_a_db_path_the_engine_refuses_is_a_clear_error(tmp_path, name, reason):
    with pytest.raises(StoreError, match=reason):
        connect(str(tmp_path / name))
    assert not (tmp_path / name).exists()


def test_the_lock_is_held_while_open_and_released_on_close(tmp_path):
    db = tmp_path / "held.db"
    client = connect(str(db))
    try:
        lock = lite.engine().lock_file(db)
        assert lock.is_file() and holds_posix_lock(lock, os.getpid())
    finally:
        disconnect(client, str(db))
    assert not lock.exists() or not holds_posix_lock(lock, os.getpid())
    connect(str(db)).close()  # opens again


def holds_posix_lock(lock: Path, pid: int) -> bool:
    """Whether ``pid`` holds a POSIX lock on ``lock`` (from /proc/locks: probing the lock
    here would drop this process's own lock)."""
    inode = lock.stat().st_ino
    return any(
        f[1] == "POSIX" and f[4] == str(pid) and f[5].endswith(f":{inode}")
        for f in (line.split() for line in Path("/proc/locks").read_text().splitlines())
    )


HOLD = """
import sys, time
from rag.store import connect
client = connect(sys.argv[1])
print("open", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_second_process_is_told_and_a_killed_holder_frees_the_db(tmp_path):
    db = tmp_path / "busy.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreLockedError, match="in use by another process"):
            connect(str(db))
        result = subprocess.run(
            [sys.executable, "-m", "ingest", str(PAGE), "--db", str(db)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "RAG_NUM_THREADS": "1"},
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "python -m rag serve-db" in " ".join(result.stderr.split())
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean close: the kernel drops its lock
        holder.wait(timeout=30)

    assert engine_processes(db) == []  # its engine stopped when the kernel dropped the lock
    client = connect(str(db))
    disconnect(client, str(db))


def engine_processes(db: Path, wait: float = 30) -> list[int]:
    """Pids of engine processes still serving ``db`` after up to ``wait`` seconds."""
    import time

    deadline = time.monotonic() + wait
    while True:
        pids = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and str(db) in _cmdline(p)
        ]
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_hnsw_on_the_cpp_engine_is_refused_before_anything_is_written(tmp_path, embedder):
    from rag.store import CollectionProfile

    db = tmp_path / "hnsw.db"
    with pytest.raises(StoreError, match="no HNSW index.*Milvus server"):
        MilvusStore.open(str(db), "docs", CollectionProfile.of(embedder), dense_index="HNSW")
    client = connect(str(db))
    try:
        assert client.list_collections() == []
    finally:
        disconnect(client, str(db))


def home_where_the_engine_cannot_make_its_mmap_folder(tmp_path: Path, monkeypatch) -> Path:
    """A HOME whose ``.cache`` is a file, so the 2.5 engine (a child process, which reads HOME
    when it starts) fails to set up ``.cache/milvus`` as when two engines race for it."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("")
    monkeypatch.setenv("HOME", str(home))
    return home


def test_an_engine_that_failed_to_set_up_its_mmap_folder_is_tried_again(tmp_path, monkeypatch):
    home = home_where_the_engine_cannot_make_its_mmap_folder(tmp_path, monkeypatch)
    db = tmp_path / "race.db"
    client = connect(str(db))
    attempts = []

    def create() -> bool:
        attempts.append(len(attempts) + 1)
        client.create_collection("docs", dimension=4)
        return client.has_collection("docs")

    try:
        created = lite.retry_engine_init(create, str(db), pause=(home / ".cache").unlink)
        assert created and attempts == [1, 2]
        client.insert("docs", [{"id": 1, "vector": [0.5, 0.5, 0.5, 0.5]}])
        hits = client.search("docs", [[0.5, 0.5, 0.5, 0.5]], limit=1)
        assert [hit["id"] for hit in hits[0]] == [1]
    finally:
        disconnect(client, str(db))


def test_an_engine_that_never_sets_up_its_mmap_folder_is_a_clear_error(
    tmp_path, monkeypatch, embedder
):
    from rag.store import CollectionProfile

    home = home_where_the_engine_cannot_make_its_mmap_folder(tmp_path, monkeypatch)
    db = tmp_path / "broken.db"
    with pytest.raises(StoreError) as raised:
        MilvusStore.open(str(db), "docs", CollectionProfile.of(embedder))
    message = str(raised.value)
    assert str(db) in message and str(home / ".cache" / "milvus") in message
    assert f"{lite.ENGINE_INIT_ATTEMPTS} attempts" in message
    (home / ".cache").unlink()
    store = MilvusStore.open(str(db), "docs", CollectionProfile.of(embedder))  # lock released
    try:
        assert store.count_chunks() == 0
    finally:
        store.close()
