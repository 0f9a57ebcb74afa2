"""Chunker: token budgets, boundaries, overlap, ids and metadata."""

from __future__ import annotations

import pytest
from conftest import MILVUS_DOCS_EN

from rag.chunking import Chunker, chunk_id, context_line, embedding_text
from rag.loaders import load_document
from rag.types import Document, Section


@pytest.fixture(scope="module")
def tokens(embedder):
    return embedder.tokenizer


def test_chunks_respect_the_token_budget_on_a_real_page(tokens):
    document = load_document(MILVUS_DOCS_EN / "userGuide" / "schema" / "sparse_vector.md")
    chunks = Chunker(tokens, chunk_size=120, overlap=20).chunk(document, "f" * 64)
    assert len(chunks) > 10
    assert all(len(tokens.token_spans(c.text)) <= 120 for c in chunks)
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert {c.title for c in chunks} == {"Sparse Vector"}
    assert any(c.heading == "Sparse Vector > Set Index Parameters" for c in chunks)
    assert len({c.chunk_id for c in chunks}) == len(chunks)


def test_paragraphs_are_kept_whole_when_they_fit(tokens):
    paragraphs = [f"Paragraph {i} says something short about topic {i}." for i in range(12)]
    pieces = Chunker(tokens, chunk_size=40, overlap=0).split_text("\n\n".join(paragraphs))
    for piece in pieces:
        for line in piece.split("\n\n"):
            assert line in paragraphs  # never cut inside a paragraph


def test_overlap_repeats_words_from_the_previous_chunk(tokens):
    text = " ".join(f"word{i}" for i in range(300))
    pieces = Chunker(tokens, chunk_size=50, overlap=10).split_text(text)
    assert len(pieces) > 3
    for before, after in zip(pieces, pieces[1:], strict=False):
        first_word = after.split()[0]
        assert first_word in before.split()  # starts inside the previous chunk, on a word


def test_chunks_never_start_inside_a_word(tokens):
    text = "Tokenization of extraordinarily unpronounceable vocabulary. " * 40
    for piece in Chunker(tokens, chunk_size=30, overlap=8).split_text(text):
        assert piece.split()[0] in {
            "Tokenization",
            "of",
            "extraordinarily",
            "unpronounceable",
            "vocabulary.",
            "vocabulary",
        }


def test_ids_are_stable_and_content_derived():
    assert chunk_id("a.md", 0, "text") == chunk_id("a.md", 0, "text")
    assert (
        len(
            {
                chunk_id("a.md", 0, "text"),
                chunk_id("a.md", 1, "text"),
                chunk_id("b.md", 0, "text"),
                chunk_id("a.md", 0, "text!"),
            }
        )
        == 4
    )


def test_pages_and_headings_come_from_sections(tokens):
    document = Document(
        "r.pdf",
        "Report",
        [Section("Intro text.", ("Intro",), 1), Section("Results text.", ("Results",), 2)],
    )
    chunks = Chunker(tokens, 50, 5).chunk(document, "0" * 64)
    assert [(c.page, c.heading) for c in chunks] == [(1, "Intro"), (2, "Results")]
    assert embedding_text(chunks[1]) == "Report > Results\n\nResults text."


def test_context_line_drops_a_repeated_title():
    assert context_line("HNSW", "HNSW > Build index") == "HNSW > Build index"
    assert context_line("Guide", "Install") == "Guide > Install"
    assert context_line("Guide", "") == "Guide"


def test_invalid_sizes_are_rejected(tokens):
    with pytest.raises(ValueError):
        Chunker(tokens, chunk_size=10, overlap=10)
