"""The records that cross pipeline stages: loaded documents, chunks and search hits."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Section:
    """A run of body text under one heading path, as a loader found it.

    Attributes:
        text: plain text, paragraphs separated by blank lines.
        heading: the heading path above the text, outermost first (``("Install", "Linux")``).
        page: 1-based page number for paginated formats (PDF), else ``None``.
    """

    text: str
    heading: tuple[str, ...] = ()
    page: int | None = None


@dataclass(frozen=True)
class Document:
    """One loaded file: its title and its text split into sections.

    Attributes:
        source: the file path as given to the loader (a string, POSIX separators).
        title: the document title (front matter, first ``# H1``, ``<title>``, PDF/DOCX
            metadata) or the file stem when none exists.
        sections: body text in reading order.
    """

    source: str
    title: str
    sections: list[Section] = field(default_factory=list)


@dataclass(frozen=True)
class Chunk:
    """A token-bounded piece of a document, the unit that is embedded and stored.

    Attributes:
        chunk_id: 32 hex characters, ``sha256(source, chunk_index, text)``: stable across runs
            for unchanged content, different for changed content.
        source: path of the file the chunk came from.
        title: the document title.
        heading: heading path joined with `` > ``.
        chunk_index: 0-based position of the chunk inside its document; negative for a
            section row (``rag.chunking.section_index``).
        page: 1-based page number, 0 when the format has no pages.
        text: the chunk's text (what is shown to the user); a section row's is the first
            tokens of its section.
        file_hash: sha256 hex of the source file's bytes when it was chunked.
        language: the text's language code (``rag.language.detect``: ``en``, ``de``, ``zh``),
            set at ingest; ``""`` when unknown (not detected yet, or read from a collection
            of schema v2).
    """

    chunk_id: str
    source: str
    title: str
    heading: str
    chunk_index: int
    page: int
    text: str
    file_hash: str
    language: str = ""

    @property
    def is_section(self) -> bool:
        """Whether this is a section row rather than a chunk."""
        return self.chunk_index < 0


@dataclass
class Hit:
    """One ranked search result with the ranks and scores of every stage that produced it.

    Attributes:
        rank: 1-based final rank (after reranking, when a reranker ran).
        score: the retrieval score (fused score for hybrid search, raw similarity otherwise).
        chunk_id, source, title, heading, page, text, chunk_index: the stored chunk fields.
        dense_rank, sparse_rank: 1-based rank of the chunk in the dense and sparse candidate
            lists, ``None`` when the chunk was not among that list's candidates.
        dense_score, sparse_score: the matching raw similarity scores (inner product).
        fused_rank: 1-based rank in the retrieved (fused) list, before any reranking.
        rerank_score: the reranker's score, when a reranker ran.
        section_rank: 1-based rank of the chunk's section in the fused list of section rows
            (``rag.retriever``, convex fusion), ``None`` when its section was not among them
            or no section list was searched.
    """

    rank: int
    score: float
    chunk_id: str
    source: str
    title: str
    heading: str
    page: int
    text: str
    chunk_index: int = 0
    dense_rank: int | None = None
    sparse_rank: int | None = None
    dense_score: float | None = None
    sparse_score: float | None = None
    fused_rank: int | None = None
    rerank_score: float | None = None
    section_rank: int | None = None
