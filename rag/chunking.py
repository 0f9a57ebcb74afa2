"""Token-aware chunking: sections → paragraphs packed into chunks of at most N tokens, and
one section row per section (its first tokens), stored beside the chunks.

A section row is a :class:`~rag.types.Chunk` whose ``chunk_index`` is negative:
``-1 - i`` for the section whose first chunk has index ``i`` (:func:`section_index`). Its
text is the section's first ``section_tokens`` tokens; it is embedded like a chunk, searched
on its own (``rag.store.SECTION_FILTER``), and gives every chunk of its section a section
score (``rag.retriever``). Chunk searches leave section rows out (``CHUNK_FILTER``).
"""

from __future__ import annotations

import bisect
import hashlib
import re
from typing import TYPE_CHECKING

from rag.embedders.base import TokenCounter
from rag.types import Chunk, Document, Section

if TYPE_CHECKING:
    from rag.settings import Settings

CHUNKER_VERSION = "v1"  # bump when the splitting algorithm changes
HEADING_SEPARATOR = " > "
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def chunk_id(source: str, chunk_index: int, text: str) -> str:
    """32 hex characters of ``sha256(source NUL chunk_index NUL text)``: the primary key.

    Stable across runs for unchanged content; any change of text, position or file gives a
    new id.
    """
    digest = hashlib.sha256(f"{source}\0{chunk_index}\0{text}".encode())
    return digest.hexdigest()[:32]


def context_line(title: str, heading: str) -> str:
    """Title and heading path as one line, the title left out when the heading repeats it."""
    if not heading or heading.startswith(title):
        return heading or title
    return f"{title}{HEADING_SEPARATOR}{heading}" if title else heading


def embedding_text(chunk: Chunk) -> str:
    """The text that is embedded for a chunk: its title and heading path give it context."""
    context = context_line(chunk.title, chunk.heading)
    return f"{context}\n\n{chunk.text}" if context else chunk.text


def section_index(first_chunk: int) -> int:
    """The ``chunk_index`` of the section row whose section starts at chunk ``first_chunk``
    (``-1 - first_chunk``: negative, so a row's sign says what it is)."""
    return -1 - first_chunk


class Chunker:
    """Splits documents into chunks of at most ``chunk_size`` tokens, and gives each section
    a section row of its first ``section_tokens`` tokens.

    Chunks never cross a section (so every chunk has one heading path and one page).
    Within a section, whole paragraphs are packed greedily; a paragraph longer than
    ``chunk_size`` is cut at token boundaries. Each chunk after the first in a section starts
    with the last ``overlap`` tokens of the one before it.

    Args:
        tokenizer: token offsets of the embedder's tokenizer.
        chunk_size: maximum tokens of chunk text (title and heading come on top; keep
            ``chunk_size`` + heading below the model's input limit).
        overlap: tokens repeated from the previous chunk, ``0 <= overlap < chunk_size``.
        section_tokens: tokens of a section's text in its section row (0: no section rows).

    Raises:
        ValueError: on an invalid ``chunk_size`` / ``overlap`` / ``section_tokens``.
    """

    def __init__(
        self, tokenizer: TokenCounter, chunk_size: int, overlap: int, section_tokens: int = 0
    ) -> None:
        if chunk_size < 1 or not 0 <= overlap < chunk_size:
            raise ValueError(f"need 0 <= overlap ({overlap}) < chunk_size ({chunk_size})")
        if section_tokens < 0:
            raise ValueError(f"need section_tokens >= 0, got {section_tokens}")
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.overlap = overlap
        self.section_tokens = section_tokens

    @classmethod
    def from_settings(cls, tokenizer: TokenCounter, settings: Settings) -> Chunker:
        """The chunker of ``settings``: ``RAG_CHUNK_SIZE``, ``RAG_CHUNK_OVERLAP`` and
        ``RAG_SECTION_TOKENS``, counting with ``tokenizer``."""
        return cls(tokenizer, settings.chunk_size, settings.chunk_overlap, settings.section_tokens)

    @property
    def signature(self) -> str:
        """What decides the rows of a text besides the tokenizer: algorithm version, size,
        overlap and, with section rows, their tokens (``"v1/200/32"``, ``"v1/200/32/s512"``).
        Stored per file, so changing it re-chunks files."""
        sections = f"/s{self.section_tokens}" if self.section_tokens else ""
        return f"{CHUNKER_VERSION}/{self.chunk_size}/{self.overlap}{sections}"

    def split_text(self, text: str) -> list[str]:
        """``text`` as a list of chunk texts (paragraph-aware, token-bounded, overlapping).

        A chunk ends, by preference, where a paragraph starts, else after a sentence, else
        between words, provided the chunk stays at least half full; it never starts or ends
        inside a word unless a single word is longer than ``chunk_size`` tokens.
        """
        spans = self.tokenizer.token_spans(text)
        if not spans:
            return [text.strip()] if text.strip() else []
        n = len(spans)
        words = [i for i in range(n) if i == 0 or spans[i][0] > spans[i - 1][1]]
        sentences = [i for i in words if _after_sentence_end(text, spans[i][0])]
        paragraphs = sorted(
            {_first_token_at_or_after(spans, m.end()) for m in _PARAGRAPH_BREAK.finditer(text)}
        )
        word_starts = set(words)
        pieces: list[str] = []
        start = 0
        while start < n:
            end = min(start + self.chunk_size, n)
            if end < n:
                end = self._cut(start, end, (paragraphs, sentences, words))
            piece = text[spans[start][0] : spans[end - 1][1]].strip()
            if piece:
                pieces.append(piece)
            if end >= n:
                break
            next_start = max(end - self.overlap, start + 1)
            # Start the overlap at a word boundary (move back into the overlap, not forward).
            while next_start > start + 1 and next_start not in word_starts:
                next_start -= 1
            start = next_start if next_start in word_starts else end
        return pieces

    def _cut(self, start: int, end: int, preferences: tuple[list[int], ...]) -> int:
        """The best token index in ``[start + chunk_size // 2, end]`` to end a chunk at.

        ``preferences`` are sorted lists of candidate indices, best kind first.
        """
        floor = start + max(1, self.chunk_size // 2)
        for candidates in preferences:
            at = bisect.bisect_right(candidates, end) - 1
            if at >= 0 and candidates[at] >= floor:
                return candidates[at]
        return end

    def chunk(self, document: Document, file_hash: str) -> list[Chunk]:
        """Every chunk of ``document``, in reading order, with ids, headings and pages."""
        return self.rows(document, file_hash)[0]

    def rows(self, document: Document, file_hash: str) -> tuple[list[Chunk], list[Chunk]]:
        """``document``'s chunks (as :meth:`chunk`) and its section rows: one per section
        that has chunks, in reading order, holding the section's first ``section_tokens``
        tokens (none when ``section_tokens`` is 0)."""
        chunks: list[Chunk] = []
        sections: list[Chunk] = []
        for section in document.sections:
            first = len(chunks)
            for text in self.split_text(section.text):
                chunks.append(self._row(document, section, len(chunks), text, file_hash))
            if self.section_tokens and len(chunks) > first:
                text = self._head(section.text.strip())
                sections.append(self._row(document, section, section_index(first), text, file_hash))
        return chunks, sections

    def _head(self, text: str) -> str:
        """The first ``section_tokens`` tokens of ``text`` (cut where a token ends)."""
        spans = self.tokenizer.token_spans(text)
        if len(spans) <= self.section_tokens:
            return text
        return text[: spans[self.section_tokens - 1][1]].strip()

    @staticmethod
    def _row(document: Document, section: Section, index: int, text: str, file_hash: str) -> Chunk:
        return Chunk(
            chunk_id=chunk_id(document.source, index, text),
            source=document.source,
            title=document.title,
            heading=HEADING_SEPARATOR.join(section.heading),
            chunk_index=index,
            page=section.page or 0,
            text=text,
            file_hash=file_hash,
        )


def _after_sentence_end(text: str, offset: int) -> bool:
    """Whether the last non-space character before ``offset`` ends a sentence (``.!?:``).

    Scans back over the whitespace only, so checking every word of a text is linear.
    """
    at = offset - 1
    while at >= 0 and text[at].isspace():
        at -= 1
    return at >= 0 and text[at] in ".!?:"


def _first_token_at_or_after(spans: list[tuple[int, int]], offset: int) -> int:
    low, high = 0, len(spans)
    while low < high:
        mid = (low + high) // 2
        if spans[mid][0] < offset:
            low = mid + 1
        else:
            high = mid
    return low
