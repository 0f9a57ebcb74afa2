"""A BEIR-format retrieval set read into the project's types: corpus, queries and qrels.

Layout (https://github.com/beir-cellar/beir): ``corpus.jsonl`` (``_id``, ``title``,
``text``), ``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv`` (a header line,
then ``query-id  corpus-id  score``; score > 0 is relevant, higher is more relevant).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rag.types import Document, Section

Qrels = dict[str, dict[str, int]]  # query id -> {doc id: graded relevance}


class DatasetError(ValueError):
    """The folder is not a readable BEIR dataset (the message says what is missing)."""


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR dataset folder and one of its qrels splits.

    Attributes:
        path: the dataset folder.
        split: the qrels split (``train``, ``dev``, ``test``…).
        name: a short readable name (``beir/scifact``, ``xquad_r/en/sentences``).
    """

    path: Path
    split: str
    name: str

    @classmethod
    def open(cls, path: Path | str, split: str) -> BeirDataset:
        """Check the folder holds a corpus, queries and the split's qrels.

        Raises:
            DatasetError: a file is missing (the message lists the splits that exist).
        """
        path = Path(path).expanduser().resolve()
        for name in ("corpus.jsonl", "queries.jsonl"):
            if not (path / name).is_file():
                raise DatasetError(f"{path} is not a BEIR dataset: no {name}")
        if not (path / "qrels" / f"{split}.tsv").is_file():
            splits = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
            raise DatasetError(
                f"{path} has no qrels/{split}.tsv; splits: {', '.join(splits) or 'none'}"
            )
        return cls(path, split, dataset_name(path))

    @property
    def corpus_path(self) -> Path:
        return self.path / "corpus.jsonl"

    def corpus_hash(self) -> str:
        """sha256 hex of ``corpus.jsonl``'s bytes: the corpus's identity."""
        with self.corpus_path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()

    def documents(self) -> Iterator[Document]:
        """Every corpus entry as ``Document(source=_id, title, [Section(text)])``, in file
        order. An entry with no text but a title is indexed by its title."""
        return map(corpus_document, self._corpus_rows())

    def _corpus_rows(self) -> Iterator[dict]:
        """Every ``corpus.jsonl`` entry as parsed JSON, in file order (blank lines skipped)."""
        with self.corpus_path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def metadata_field(self, name: str) -> dict[str, str]:
        """Doc id → the string value of ``metadata[name]`` for every corpus entry that has
        one (the Milvus FAQ split's ``path``: the file a section comes from).

        Raises:
            DatasetError: no corpus entry has the field.
        """
        values: dict[str, str] = {}
        for row in self._corpus_rows():
            value = (row.get("metadata") or {}).get(name)
            if value is not None:
                values[str(row["_id"])] = str(value)
        if not values:
            raise DatasetError(f"{self.corpus_path}: no document has metadata field {name!r}")
        return values

    def queries(self) -> dict[str, str]:
        """Query id → text, in file order."""
        queries: dict[str, str] = {}
        with (self.path / "queries.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    queries[str(row["_id"])] = row["text"]
        return queries

    def qrels(self) -> Qrels:
        """The split's judgments: query id → {doc id: score} (every row, zeros included)."""
        return read_qrels(self.path / "qrels" / f"{self.split}.tsv")

    def judged_queries(
        self, limit: int | None = None, sample: int | None = None, seed: int = 0
    ) -> tuple[dict[str, str], Qrels]:
        """The queries that have at least one relevant document (score > 0), in
        ``queries.jsonl`` order, and their qrels: all of them, the first ``limit``, or a
        uniform random ``sample`` of that many (``random.Random(seed)``, file order kept;
        for sets grouped by language such as XQuAD-R ``multi``, where the first N would all
        be English)."""
        qrels = self.qrels()
        queries = {
            qid: text
            for qid, text in self.queries().items()
            if any(score > 0 for score in qrels.get(qid, {}).values())
        }
        if limit is not None:
            queries = dict(list(queries.items())[:limit])
        if sample is not None and sample < len(queries):
            chosen = set(random.Random(seed).sample(sorted(queries), sample))
            queries = {qid: text for qid, text in queries.items() if qid in chosen}
        return queries, {qid: qrels[qid] for qid in queries}


def corpus_document(row: dict) -> Document:
    """One ``corpus.jsonl`` row as a :class:`Document` (title may be empty)."""
    title = (row.get("title") or "").strip()
    text = (row.get("text") or "").strip() or title
    return Document(source=str(row["_id"]), title=title, sections=[Section(text)])


def read_qrels(path: Path) -> Qrels:
    """A BEIR qrels TSV (header line optional) as query id → {doc id: int score}."""
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    return qrels


def dataset_name(path: Path) -> str:
    """The folder's last two path parts, three when its parent is itself a dataset
    (``beir/scifact``, ``xquad_r/en``, ``xquad_r/en/sentences``)."""
    parts = 3 if (path.parent / "corpus.jsonl").is_file() else 2
    return "/".join(path.parts[-parts:])
