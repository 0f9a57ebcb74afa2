"""Token-aware chunking: sections → paragraphs packed into chunks of at most N tokens."""

from __future__ import annotations

import hashlib
import re

from rag.embedders.base import TokenCounter
from rag.types import Chunk, Document

HEADING_SEPARATOR = " > "
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def chunk_id(source: str, chunk_index: int, text: str) -> str:
    """32 hex characters of ``sha256(source NUL chunk_index NUL text)``: the primary key.

    Stable across runs for unchanged content; any change of text, position or file gives a
    new id.
    """
    digest = hashlib.sha256(f"{source}\0{chunk_index}\0{text}".encode())
    return digest.hexdigest()[:32]


def embedding_text(chunk: Chunk) -> str:
    """The text that is embedded for a chunk: title and heading path give it context."""
    context = " — ".join(part for part in (chunk.title, chunk.heading) if part)
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

    def split_text(self, text: str) -> list[str]:
        """``text`` as a list of chunk texts (paragraph-aware, token-bounded, overlapping)."""
        spans = self.tokenizer.token_spans(text)
        if not spans:
            return [text.strip()] if text.strip() else []
        # Token-index boundaries where a paragraph starts: preferred cut points.
        breaks = {0}
        for match in _PARAGRAPH_BREAK.finditer(text):
            breaks.add(_first_token_at_or_after(spans, match.end()))
        pieces: list[str] = []
        start, n = 0, len(spans)
        while start < n:
            end = min(start + self.chunk_size, n)
            if end < n:
                cut = max((b for b in breaks if start < b <= end), default=end)
                # Prefer a paragraph break unless it leaves the chunk less than half full.
                end = cut if cut - start >= self.chunk_size // 2 else end
            piece = text[spans[start][0] : spans[end - 1][1]].strip()
            if piece:
                pieces.append(piece)
            if end >= n:
                break
            start = max(end - self.overlap, start + 1)
        return pieces

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


def _first_token_at_or_after(spans: list[tuple[int, int]], offset: int) -> int:
    low, high = 0, len(spans)
    while low < high:
        mid = (low + high) // 2
        if spans[mid][0] < offset:
            low = mid + 1
        else:
            high = mid
    return low
