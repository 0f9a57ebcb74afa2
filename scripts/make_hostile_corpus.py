"""Build the hostile-input corpus of tests/hostile_corpus.py into a folder, to ingest by hand.

    python scripts/make_hostile_corpus.py data/hostile

Prints every case (expected outcome, kind, path, and the text stored or the reason given),
then the ``python -m ingest`` command that ingests the corpus folder and the paths given
directly into ``FOLDER/hostile.db``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostile_corpus import build_hostile_corpus, ingest_paths  # noqa: E402


def main() -> None:
    """Build the corpus into FOLDER (which must not hold one yet) and print what to expect."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where to build it")
    root = parser.parse_args().folder.absolute()
    cases = build_hostile_corpus(root)
    for case in cases:
        print(f"{case.expect.value:10} {case.kind} · {_shown(f'{case.path}: {case.detail}')}")
    kinds = len({case.kind for case in cases})
    paths = " ".join(shlex.quote(str(p)) for p in ingest_paths(root, cases))
    print(f"\n{len(cases)} cases of {kinds} kinds. Ingest them with:")
    print(f"  python -m ingest {paths} --db {shlex.quote(str(root / 'hostile.db'))}")


def _shown(text: str) -> str:
    """``text`` on one line: control characters and undecodable bytes escaped, as ingest
    prints paths."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


if __name__ == "__main__":
    main()
