"""Milvus Lite, the embedded engine: which one is installed, its db's lock, serving a db on a port.

Two engines share the package name ``milvus-lite`` (pinned by platform in pyproject.toml):

- **2.5** (wheels for Linux and macOS, x86_64 and arm64): Milvus's C++ engine. For a ``*.db``
  URI, pymilvus starts it as a child process (``milvus_lite.server.Server``) on a Unix
  socket. The db is one file; ``.<name>.lock`` beside it holds a POSIX lock (``lockf``) for
  as long as a process has the db open, and the engine stops when that lock is released.
- **3** (pure Python, every platform; the engine where 2.5 has no wheel, e.g. Windows): an
  in-process gRPC server. The db is a folder with a ``LOCK`` file (``flock``).

Either engine lets one process open a db; ``python -m rag serve-db`` serves it to several.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TypeVar

from pymilvus import MilvusException

# milvus-lite 2.5 imports pkg_resources (hence setuptools<81), which warns on every import.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

# milvus_lite.server.Server's own checks on a 2.5 db file name.
_CPP_DB_NAME = re.compile(r"^[a-zA-Z0-9.\-_]+$")
_CPP_DB_NAME_CHARS = 36

# milvus-lite 2.5's engine deletes and re-creates its mmap folder, $HOME/.cache/milvus, when it
# first makes or loads a collection. Two engines doing so at the same moment (two processes
# opening their dbs together) can make one fail with this message (milvus-lite issue #305);
# that engine sets the folder up again on its next collection, so the store tries again.
ENGINE_INIT_FAILURE = "Mmap manager has not been init"
ENGINE_INIT_ATTEMPTS = 3

T = TypeVar("T")

# Our open clients per db path: the lock must not be probed where this process holds it
# (closing any descriptor of a file drops the process's POSIX locks on it).
open_clients: Counter[str] = Counter()


class LiteError(RuntimeError):
    """A Milvus Lite db that cannot be opened as asked; the message says what to do."""


class LiteLockedError(LiteError):
    """The db is open in another process (one process per db)."""


@dataclass(frozen=True)
class Engine:
    """The installed Milvus Lite engine.

    Attributes:
        version: the ``milvus-lite`` package version, e.g. ``"2.5.1"``.
    """

    version: str

    @property
    def native(self) -> bool:
        """Whether this is the C++ engine (2.x) rather than the pure-Python one (3.x)."""
        return self.version.split(".")[0] == "2"

    @property
    def name(self) -> str:
        """``Milvus Lite 2.5.1 (C++)`` or ``Milvus Lite 3.2.2 (Python)``."""
        return f"Milvus Lite {self.version} ({'C++' if self.native else 'Python'})"

    def lock_file(self, db: Path) -> Path:
        """The file whose lock says a process has ``db`` open."""
        return db.parent / f".{db.name}.lock" if self.native else db / "LOCK"

    def locked_elsewhere(self, db: Path) -> bool:
        """Whether another process has the db open (holds its lock)."""
        lock = self.lock_file(db)
        if open_clients[str(db)] or not lock.is_file():
            return False
        fd = os.open(lock, os.O_RDWR)
        try:
            if self.native:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.lockf(fd, fcntl.LOCK_UN)
            else:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except OSError:  # EAGAIN / EACCES (lockf) or EWOULDBLOCK (flock): held elsewhere
            return True
        finally:
            os.close(fd)

    def check_db(self, db: Path, uri: str) -> None:
        """Refuse a db path this engine cannot open, before pymilvus tries.

        Raises:
            LiteError: the path does not end in ``.db`` (pymilvus's sign of a Lite db), the
                2.5 engine's name rules are broken, or the db was written by the other
                engine (a folder for 2.5, a file for 3). Nothing on disk is changed.
        """
        if not db.name.endswith(".db"):
            raise LiteError(f"{uri}: a Milvus Lite db path must end in .db (e.g. data/docs.db)")
        if self.native and (not _CPP_DB_NAME.match(db.name) or len(db.name) > _CPP_DB_NAME_CHARS):
            raise LiteError(
                f"{uri}: {self.name} needs a db file name of at most {_CPP_DB_NAME_CHARS} "
                "letters, digits, '.', '-' or '_' (e.g. data/docs.db)"
            )
        foreign = db.is_dir() if self.native else db.is_file()
        if foreign:
            other = "3.x (a folder)" if self.native else "2.5 (one file)"
            raise LiteError(
                f"{uri} was written by Milvus Lite {other}, and this install runs "
                f"{self.name}, which cannot read it. It is left as it is. Ingest your "
                "documents again into a new path (python -m ingest PATH --db data/new.db, or "
                "RAG_MILVUS_URI=data/new.db), then delete the old db when you no longer need it."
            )

    def prepare(self, db: Path, uri: str) -> None:
        """Make ``db`` ready to open in this process: a path this engine accepts, its folder
        made, and no other process holding it.

        Raises:
            LiteLockedError: another process has the db open.
            LiteError: see :meth:`check_db`.
        """
        self.check_db(db, uri)
        db.parent.mkdir(parents=True, exist_ok=True)
        if self.locked_elsewhere(db):
            raise LiteLockedError(in_use_message(uri))


@cache
def engine() -> Engine:
    """The installed engine.

    Raises:
        LiteError: ``milvus-lite`` is not installed.
    """
    try:
        return Engine(version("milvus-lite"))
    except PackageNotFoundError:
        raise LiteError(
            "milvus-lite is not installed: run bash scripts/setup.sh (or use a server URL)"
        ) from None


def lite_path(uri: str) -> Path | None:
    """The absolute db path of a Milvus Lite URI, ``None`` for a server URL."""
    return None if "://" in uri else Path(os.path.abspath(os.path.expanduser(uri)))


def retry_engine_init(
    call: Callable[[], T], uri: str, pause: Callable[[], None] = lambda: time.sleep(0.2)
) -> T:
    """``call()``, run again (up to ``ENGINE_INIT_ATTEMPTS`` times in all, ``pause()`` between)
    while the 2.5 engine fails to set up its mmap folder (``ENGINE_INIT_FAILURE``).

    ``call`` must be safe to repeat: the failed attempt creates or loads nothing.

    Raises:
        LiteError: every attempt failed that way; the message names ``uri`` and the folder.
        Any other exception of ``call`` as it is.
    """
    attempt = 1
    while True:
        try:
            return call()
        except MilvusException as error:
            if ENGINE_INIT_FAILURE not in str(error):
                raise
            if attempt == ENGINE_INIT_ATTEMPTS:
                folder = Path(os.environ.get("HOME", "~"), ".cache", "milvus")
                raise LiteError(
                    f"{engine().name} could not set up its mmap folder {folder} for {uri} "
                    f"({ENGINE_INIT_ATTEMPTS} attempts): check that the folder can be "
                    "created, then open the db again"
                ) from None
        attempt += 1
        pause()


def release(db: Path) -> None:
    """Stop this process's engine for ``db`` and release its lock."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(db))


def in_use_message(uri: str) -> str:
    """What to do when ``uri`` is open in another process."""
    return (
        f"the Milvus Lite db {uri} is in use by another process (Milvus Lite allows one process "
        "per db). Stop that process, or serve the db to several processes: run "
        f"`python -m rag serve-db --db {uri}` when no other process has it open, and use "
        "RAG_MILVUS_URI=http://127.0.0.1:19530 (or --db)."
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def serve(
    on_ready: Callable[[str], None],
    stop: threading.Event,
    db: Path,
    host: str,
    port: int,
    workers: int,
) -> None:
    """Serve ``db`` on ``host:port`` with the installed engine until ``stop`` is set.

    ``port=0`` picks a free port. ``on_ready`` gets ``http://HOST:PORT`` once it accepts
    connections. The 2.5 engine runs as a child process (it takes no thread count);
    ``workers`` sets the 3.x server's gRPC threads.

    Raises:
        LiteLockedError: another process has the db open.
        LiteError: the db cannot be opened (see :meth:`Engine.check_db`), or the address
            cannot be bound.
    """
    lite = engine()
    lite.prepare(db, str(db))
    if lite.native:
        _serve_native(on_ready, stop, db, host, port or _free_port(host))
    else:
        _serve_python(on_ready, stop, db, host, port, workers)


def _serve_native(
    on_ready: Callable[[str], None], stop: threading.Event, db: Path, host: str, port: int
) -> None:
    from milvus_lite.server import Server

    if _accepts(host, port):
        raise LiteError(f"cannot listen on {host}:{port}: the port is in use")
    server = Server(str(db), address=f"{host}:{port}")
    if not server.init() or not server.start():
        server.stop()
        raise LiteError(f"cannot start {engine().name} for {db} on {host}:{port}")
    process: subprocess.Popen = server._p
    try:
        deadline = time.monotonic() + 60
        while not _accepts(host, port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise LiteError(f"{engine().name} did not start listening on {host}:{port}")
            time.sleep(0.1)
        on_ready(f"http://{host}:{port}")
        while not stop.wait(0.5) and process.poll() is None:
            pass
    finally:
        if process.poll() is None:
            process.terminate()  # the engine finishes its requests and closes the db
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        server.stop()


def _serve_python(
    on_ready: Callable[[str], None],
    stop: threading.Event,
    db: Path,
    host: str,
    port: int,
    workers: int,
) -> None:
    from milvus_lite.adapter.grpc.server import start_server_in_thread
    from milvus_lite.exceptions import DataDirLockedError

    try:
        server, handle, bound = start_server_in_thread(str(db), host, port, workers)
    except DataDirLockedError:
        raise LiteLockedError(in_use_message(str(db))) from None
    except RuntimeError as error:  # grpc: the address cannot be bound
        raise LiteError(f"cannot listen on {host}:{port} (is the port in use?): {error}") from None
    try:
        on_ready(f"http://{host}:{bound}")
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(grace=5).wait()
        handle.close()
