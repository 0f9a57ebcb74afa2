"""Token-aware chunking: sections → paragraphs packed into chunks of at most N tokens."""

from __future__ import annotations

import bisect
import hashlib
import re

from rag.embedders.base import TokenCounter
from rag.types import Chunk, Document

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


class Chunker:
    """Splits documents into chunks of at most ``chunk_size`` tokens.

    Chunks never cross a section (so every chunk has one heading path and one page).
    Within a section, whole paragraphs are packed greedily; a paragraph longer than
    ``chunk_size`` is cut at token boundaries. Each chunk after the first in a section starts
    with the last ``overlap`` tokens of the one before it.

    Args:
        tokenizer: token offsets of the embedder's tokenizer.
        chunk_size: maximum tokens of chunk text (title and heading come on top; keep
            ``chunk_size`` + heading below the model's input limit).
        overlap: tokens repeated from the previous chunk, ``0 <= overlap < chunk_size``.

    Raises:
        ValueError: on an invalid ``chunk_size`` / ``overlap``.
    """

    def __init__(self, tokenizer: TokenCounter, chunk_size: int, overlap: int) -> None:
        if chunk_size < 1 or not 0 <= overlap < chunk_size:
            raise ValueError(f"need 0 <= overlap ({overlap}) < chunk_size ({chunk_size})")
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.overlap = overlap

    @property
    def signature(self) -> str:
        """What decides the chunks of a text besides the tokenizer: algorithm version, size
        and overlap (``"v1/200/32"``). Stored per file, so changing it re-chunks files."""
        return f"{CHUNKER_VERSION}/{self.chunk_size}/{self.overlap}"

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
        chunks: list[Chunk] = []
        for section in document.sections:
            heading = HEADING_SEPARATOR.join(section.heading)
            for text in self.split_text(section.text):
                index = len(chunks)
                chunks.append(
                    Chunk(
                        chunk_id=chunk_id(document.source, index, text),
                        source=document.source,
                        title=document.title,
                        heading=heading,
                        chunk_index=index,
                        page=section.page or 0,
                        text=text,
                        file_hash=file_hash,
                    )
                )
        return chunks


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
