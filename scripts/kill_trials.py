"""Crash safety, measured: `kill -9` an ingest at a random moment, re-run it, compare.

Usage: python scripts/kill_trials.py [--trials 20] [--seed 0] [--pages 25] [--db-dir DIR]

The corpus is the first PAGES pages (sorted) of the Milvus docs' `about/`, `embeddings/`
and `rerankers/` folders in ../shared/data, copied into DIR/corpus. Before the trials:

1. An older version of the corpus is written to DIR/corpus (one page missing, one cut to
   half, one with an extra section, one without a middle paragraph, one line changed, and
   a page of `faq/` that the final version does not have) and ingested into DIR/base.db.
2. The final version (the real pages) replaces it; a clean ingest into DIR/reference.db
   is the reference, and an uninterrupted re-ingest of a copy of base.db must match it.
   Both runs are timed, and so is their write phase (from the first write to the first
   flush: the switches of every batch, and the embedding of every batch but the first).

Each trial starts `python -m ingest DIR/corpus --prune` on a fresh db (even trials) or on
a copy of base.db (odd trials: files replaced, added and deleted), SIGKILLs it, reads what
the kill left (to name the phase it landed in), re-runs the same command to completion and
compares the collection with the reference: the same chunk ids, the same count(*), the
same manifest (path, sha256, chunk count per file) and an empty switch journal. Trials
alternate two kill timings: a delay drawn uniformly within the measured duration of the
whole run, or, to land more kills among the writes, a delay drawn within the measured write
phase after the run's first write. Writes are seen from outside: the db's files change (the
2.5 engine's SQLite file and its journal, the first change after a quiet second, since
creating and loading the collections writes to it too; the 3.x engine's write-ahead logs
under `<db>/collections/*/wal/`, which a flush deletes). This only affects timing. Every ingest
runs in its own process with RAG_NUM_THREADS=THREADS.

Prints one line per trial and `converged n/N`; exits 1 if any trial did not converge.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag.store import FileRecord, MilvusStore, StoreError  # noqa: E402
from rag.store.lite import engine  # noqa: E402

DOCS = REPO.parent / "shared" / "data" / "milvus_docs" / "web-content_v2.6.x_en" / "site" / "en"
FOLDERS = ("about", "embeddings", "rerankers")
COLLECTION = "docs"
POLL_SECONDS = 0.005
QUIET_SECONDS = 1.0  # no change to a 2.5 db file for this long before its first chunk write

app = typer.Typer(add_completion=False, help=__doc__)


@dataclass(frozen=True)
class State:
    """What a collection holds: chunk ids, count(*), manifest rows and open switches."""

    ids: frozenset[str]
    count: int
    manifest: dict[str, tuple[str, int]]
    journal: dict[str, str]  # source → switch phase (see `switch_phase`)

    def same_as(self, other: State) -> bool:
        """Same chunk ids, count and manifest, and neither has an open switch."""
        return (
            (self.ids, self.count, self.manifest) == (other.ids, other.count, other.manifest)
            and not self.journal
            and not other.journal
        )


@dataclass(frozen=True)
class Run:
    """One ingest process: exit code, seconds, when it first wrote and when it first flushed
    (seconds after its start), whether it was killed."""

    returncode: int
    seconds: float
    first_write: float | None
    first_flush: float | None
    killed: bool

    @property
    def write_phase(self) -> float:
        """Seconds from the first write to the first flush (to the exit without one)."""
        assert self.first_write is not None
        return (self.first_flush or self.seconds) - self.first_write


def switch_phase(store: MilvusStore, record: FileRecord | None, switch) -> str:
    """How far one journaled switch got: journaling, upsert, delete/commit or committed."""
    if switch is None:
        return "journaling"
    if record is not None and (record.file_hash, record.chunking) == (
        switch.record.file_hash,
        switch.record.chunking,
    ):
        return "committed"
    present = len(store.existing_chunk_ids(switch.added))
    if present == len(switch.added):
        return "upserted"  # the next run finishes it
    return "upserting" if present else "journaled"  # the next run undoes it


def read_state(db: Path) -> State | None:
    """The collection at ``db``, or ``None`` when it does not exist yet."""
    try:
        store = MilvusStore.open(str(db), COLLECTION, create=False)
    except StoreError:
        return None
    try:
        manifest = store.files()
        journal = {
            source: switch_phase(store, manifest.get(source), switch)
            for source, switch in store.journal().items()
        }
        return State(
            frozenset(store.all_chunk_ids()),
            store.count_chunks(),
            {s: (r.file_hash, r.n_chunks) for s, r in manifest.items()},
            journal,
        )
    finally:
        store.close()


def kill_point(left: State | None, start: State | None, final: State) -> str:
    """Name the phase a kill landed in, from the state it left."""
    if left is None:
        return "startup (no collection yet)"
    if left.journal:
        phases = Counter(left.journal.values())
        for phase, name in (
            ("journaling", "writing the journal"),
            ("upserting", "inside a switch: upsert (undone)"),
            ("upserted", "inside a switch: delete/commit (finished)"),
        ):
            if phases[phase]:
                return name
        if phases["committed"] == len(left.journal):
            return "batch committed, journal not cleared"
        return "between two files of a batch"
    if (start is not None and left.same_as(start)) or (start is None and not left.ids):
        return "before any write (load, embed)"
    if left.manifest == final.manifest and left.ids == final.ids:
        return "after the last write (flush, exit)"
    if set(final.manifest) <= set(left.manifest) and all(
        left.manifest[s] == final.manifest[s] for s in final.manifest
    ):
        return "before or during --prune"
    return "between two batches"


def write_marks(db: Path) -> dict[Path, tuple[int, int]]:
    """(size, mtime) of every file the engine writes: a 2.5 db file and its SQLite journal,
    or the write-ahead logs of a 3.x db folder."""
    if db.is_dir():
        paths = list(db.glob("collections/*/wal/*"))
    else:
        paths = [db, db.with_name(db.name + "-journal"), db.with_name(db.name + "-wal")]
    marks = {}
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:  # not written yet, or deleted by a flush meanwhile
            continue
        marks[path] = (stat.st_size, stat.st_mtime_ns)
    return marks


def remove_db(db: Path) -> None:
    """Delete a db (a 2.5 file or a 3.x folder) and its lock file, if they exist."""
    engine().lock_file(db).unlink(missing_ok=True)
    if db.is_dir():
        shutil.rmtree(db)
    else:
        db.unlink(missing_ok=True)


def copy_db(source: Path, target: Path) -> None:
    """Copy a closed db (a 2.5 file or a 3.x folder)."""
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def ingest(
    corpus: Path,
    db: Path,
    log: Path,
    env: dict[str, str],
    chunk_size: int,
    *,
    delay: float | None = None,
    after_first_write: bool = False,
) -> Run:
    """Run `python -m ingest corpus --prune` into ``db``; SIGKILL it ``delay`` seconds after
    its start (or after its first write), if it is still running then."""
    command = [sys.executable, "-m", "ingest", str(corpus), "--db", str(db)]
    command += ["--collection", COLLECTION, "--chunk-size", str(chunk_size), "--prune"]
    seen = write_marks(db)
    started = time.monotonic()
    deadline = None if delay is None or after_first_write else started + delay
    first_write = first_flush = None
    last_change = started
    killed = False
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=log.parent, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        while process.poll() is None:
            now = time.monotonic()
            sizes = write_marks(db)
            changed = any(seen.get(p) != mark for p, mark in sizes.items())
            # A 2.5 db file also changes when the collections are created and loaded: the
            # chunk writes are the first change after a quiet spell (the embedding).
            quiet = db.is_dir() or (bool(seen) and now - last_change >= QUIET_SECONDS)
            if first_write is None and changed and quiet:
                first_write = now - started
                if delay is not None and after_first_write:
                    deadline = now + delay
            if changed:
                last_change = now
            if (
                first_write is not None
                and first_flush is None
                and db.is_dir()
                and set(seen) - set(sizes)
            ):
                first_flush = now - started  # a flush deletes the log files it sealed
            seen = sizes
            if deadline is not None and now >= deadline:
                process.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(POLL_SECONDS)
        returncode = process.wait()
    return Run(returncode, time.monotonic() - started, first_write, first_flush, killed)


def write_corpus(corpus: Path, pages: list[Path], older: bool) -> None:
    """Write the final version of the corpus (the real pages), or an older version of it."""
    if corpus.exists():
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True)
    texts = {page.name: page.read_text(encoding="utf-8") for page in pages}
    if older:
        gone = sorted((DOCS / "faq").glob("*.md"))[0]
        names = [page.name for page in pages]
        del texts[names[0]]  # added by the final version
        lines = texts[names[1]].splitlines(keepends=True)
        texts[names[1]] = "".join(lines[: len(lines) // 2])  # the final version is longer
        extra = "".join(gone.read_text(encoding="utf-8").splitlines(keepends=True)[:40])
        texts[names[2]] += "\n\n## Notes of an older version\n\n" + extra  # removed later
        paragraphs = texts[names[3]].split("\n\n")
        del paragraphs[len(paragraphs) // 2]  # inserted later: later chunk indices shift
        texts[names[3]] = "\n\n".join(paragraphs)
        lines = texts[names[4]].splitlines(keepends=True)
        middle = next(i for i in range(len(lines) // 2, len(lines)) if lines[i].strip())
        lines[middle] = lines[middle].rstrip("\n") + " (wording of an older version)\n"
        texts[names[4]] = "".join(lines)
        texts[f"old-{gone.name}"] = gone.read_text(encoding="utf-8")  # deleted later: --prune
    for name, text in texts.items():
        (corpus / name).write_text(text, encoding="utf-8")


def checked(run: Run, log: Path, what: str) -> Run:
    """``run`` if it exited 0; otherwise stop with its log."""
    if run.returncode != 0:
        sys.exit(f"{what} failed (exit {run.returncode}):\n{log.read_text()[-3000:]}")
    return run


@app.command()
def main(
    trials: Annotated[int, typer.Option(min=1, help="Kill-and-re-run trials.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the kill delays.")] = 0,
    pages: Annotated[int, typer.Option(min=6, max=25, help="Pages of the corpus.")] = 25,
    chunk_size: Annotated[int, typer.Option(help="Max tokens per chunk.")] = 160,
    threads: Annotated[int, typer.Option(min=1, help="RAG_NUM_THREADS of each ingest.")] = 1,
    db_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the corpus, dbs and logs (default: a temp folder, removed unless "
            "a trial did not converge)."
        ),
    ] = None,
) -> None:
    """Kill ingests at random moments and check that a re-run converges to the reference."""
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kill_trials_")) if db_dir is None else db_dir
    work.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "RAG_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    corpus = work / "corpus"
    selected = sorted(p for folder in FOLDERS for p in (DOCS / folder).glob("*.md"))[:pages]
    base, reference, update_db = work / "base.db", work / "reference.db", work / "update.db"
    keep = db_dir is not None
    try:
        for db in (base, reference, update_db):
            remove_db(db)
        write_corpus(corpus, selected, older=True)
        log = work / "base.log"
        checked(ingest(corpus, base, log, env, chunk_size), log, "ingest of the older version")
        older = read_state(base)
        write_corpus(corpus, selected, older=False)
        log = work / "reference.log"
        fresh = checked(ingest(corpus, reference, log, env, chunk_size), log, "reference ingest")
        final = read_state(reference)
        copy_db(base, update_db)
        log = work / "update.log"
        update = checked(ingest(corpus, update_db, log, env, chunk_size), log, "update ingest")
        updated = read_state(update_db)
        if older is None or final is None or updated is None or not updated.same_as(final):
            sys.exit("an uninterrupted update of the older version differs from the reference")
        if fresh.first_write is None or update.first_write is None:
            sys.exit(f"no write seen to {reference}: has the engine's layout changed?")
        print(
            f"corpus: {len(selected)} pages ({', '.join(FOLDERS)}), chunk size {chunk_size}; "
            f"reference: {final.count} chunks in {len(final.manifest)} files; older version: "
            f"{older.count} chunks in {len(older.manifest)} files"
        )
        for name, run in (("fresh", fresh), ("update", update)):
            print(
                f"uninterrupted {name} ingest: {run.seconds:.1f} s, first write at "
                f"{run.first_write:.2f} s, write phase {run.write_phase:.2f} s"
            )

        rng = random.Random(seed)
        converged = 0
        points: Counter[str] = Counter()
        for trial in range(trials):
            from_base, in_writes = trial % 2 == 1, trial % 4 >= 2
            measured = update if from_base else fresh
            db = work / f"trial-{trial:02d}.db"
            remove_db(db)
            if from_base:
                copy_db(base, db)
            if in_writes:
                delay = rng.uniform(0, measured.write_phase)
                timing = f"first write + {delay:5.2f} s"
            else:
                delay = rng.uniform(0, measured.seconds)
                timing = f"start + {delay:5.2f} s"
            log = work / f"trial-{trial:02d}-killed.log"
            run = ingest(corpus, db, log, env, chunk_size, delay=delay, after_first_write=in_writes)
            if run.killed:
                point = kill_point(read_state(db), older if from_base else None, final)
            else:
                point = f"not killed: exited {run.returncode} first"
            points[point] += 1
            log = work / f"trial-{trial:02d}-rerun.log"
            rerun = ingest(corpus, db, log, env, chunk_size)
            state = read_state(db)
            ok = rerun.returncode == 0 and state is not None and state.same_as(final)
            converged += ok
            found = f"{state.count} chunks, {len(state.manifest)} files" if state else "nothing"
            print(
                f"trial {trial + 1:2d}/{trials} {'update' if from_base else 'fresh':6s} "
                f"kill at {timing:21s} ({run.seconds:5.1f} s): {point:42s} "
                f"re-run {rerun.seconds:5.1f} s, exit {rerun.returncode}: {found} -> "
                + ("converged" if ok else f"DIFFERENT (kept: {db}, {log})"),
                flush=True,
            )
            if ok:
                remove_db(db)
            keep = keep or not ok
        print("kill points: " + "; ".join(f"{n} × {p}" for p, n in points.most_common()))
        print(f"converged {converged}/{trials} in {time.monotonic() - started:.0f} s")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    if converged < trials:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
