"""Section rows: one row per section (its first tokens) stored beside the chunks, searched
apart from them, and a share of each chunk's convex score (rag.chunking, rag.retriever)."""

from __future__ import annotations

import pytest
from conftest import milvus_docs_subset

from rag.chunking import HEADING_SEPARATOR, Chunker, section_index
from rag.loaders import parse_document
from rag.retriever import Retriever
from rag.settings import DEFAULT_SECTION_WEIGHT, Fusion, SearchMode
from rag.store import SECTION_FILTER

QUESTION = "How do I create a sparse vector index?"


@pytest.fixture(scope="module")
def page():
    """A real page with several sections, some of them longer than one chunk."""
    path = next(p for p in milvus_docs_subset() if p.name == "sparse_vector.md")
    return parse_document(path, path.read_bytes())


def test_each_section_with_text_gets_one_row_of_its_first_tokens(embedder, page):
    chunker = Chunker(embedder.tokenizer, 200, 32, section_tokens=64)
    chunks, sections = chunker.rows(page, "f" * 64)
    assert chunks == chunker.chunk(page, "f" * 64)
    with_text = [s for s in page.sections if s.text.strip()]
    assert len(sections) == len(with_text) > 3
    for row, section in zip(sections, with_text, strict=True):
        assert row.is_section and row.heading == HEADING_SEPARATOR.join(section.heading)
        assert section.text.strip().startswith(row.text)
        assert len(embedder.tokenizer.token_spans(row.text)) <= 64
        first = next(c for c in chunks if section_index(c.chunk_index) == row.chunk_index)
        assert (first.heading, first.page) == (row.heading, row.page)
        assert first.text.startswith(row.text[:20])
    assert any(len(s.text) > len(r.text) for s, r in zip(with_text, sections, strict=True))
    assert not any(c.is_section for c in chunks)


def test_without_section_tokens_there_are_no_section_rows(embedder, page):
    chunker = Chunker(embedder.tokenizer, 200, 32)
    assert chunker.rows(page, "f" * 64)[1] == []
    assert chunker.signature == "v1/200/32"
    assert Chunker(embedder.tokenizer, 200, 32, 512).signature == "v1/200/32/s512"
    with pytest.raises(ValueError, match="section_tokens"):
        Chunker(embedder.tokenizer, 200, 32, -1)


def test_the_store_holds_section_rows_that_chunk_counts_leave_out(ingested, retriever):
    _, _, report = ingested
    store = retriever.store
    rows = store.all_rows()
    chunks = [r for r in rows if not r.is_section]
    sections = [r for r in rows if r.is_section]
    assert chunks == sorted(store.all_chunks(), key=rows.index)
    assert sections and store.count_chunks() == len(chunks) == report.chunks_written
    stored = store.client.query(
        store.collection, filter=SECTION_FILTER, output_fields=["count(*)"]
    )[0]["count(*)"]
    assert stored == len(sections)
    source = sections[0].source
    assert store.count_chunks(source=source) == sum(c.source == source for c in chunks)
    assert len(store.chunk_ids(source)) == sum(r.source == source for r in rows)
    # every section row names the first chunk of its section
    first = {(c.source, c.chunk_index): c for c in chunks}
    for row in sections:
        chunk = first[(row.source, -1 - row.chunk_index)]
        assert (chunk.heading, chunk.page) == (row.heading, row.page)


@pytest.mark.parametrize(
    ("mode", "fusion"),
    [
        (SearchMode.DENSE, Fusion.CONVEX),
        (SearchMode.SPARSE, Fusion.CONVEX),
        (SearchMode.BM25, Fusion.CONVEX),
        (SearchMode.HYBRID, Fusion.RRF),
        (SearchMode.HYBRID, Fusion.WEIGHTED),
        (SearchMode.HYBRID, Fusion.CONVEX),
    ],
)
def test_searches_return_chunks_only(retriever, mode, fusion):
    hits = retriever.search(QUESTION, top_k=200, mode=mode, fusion=fusion)
    assert len(hits) >= 50
    assert all(hit.chunk_index >= 0 for hit in hits)


def test_the_convex_fusion_ranks_chunks_by_their_sections(retriever):
    """With all the weight on sections, hits follow their section's rank; with none, no
    section list is searched and the hits are the plain convex fusion."""
    store, embedder = retriever.store, retriever.embedder
    by_sections = Retriever(store, embedder, candidates=50, section_weight=1.0)
    hits = by_sections.search(QUESTION, top_k=30)
    ranks = [hit.section_rank for hit in hits]
    assert ranks[0] == 1 and None not in ranks[:10]
    ranked = [r for r in ranks if r is not None]
    assert ranked == sorted(ranked)
    assert [hit.rank for hit in hits] == [hit.fused_rank for hit in hits] == list(range(1, 31))

    plain = Retriever(store, embedder, candidates=50, section_weight=0.0).search(QUESTION, top_k=30)
    assert all(hit.section_rank is None for hit in plain)
    assert [h.chunk_id for h in plain] != [h.chunk_id for h in hits]


def test_the_default_score_weighs_the_chunk_and_section_scores(retriever):
    """``score = (1 − w) · chunk + w · section``: the chunk's own fused score is the plain
    convex fusion's, so the difference is what the section adds, equal within a section."""
    store, embedder = retriever.store, retriever.embedder
    plain = Retriever(store, embedder, candidates=50, section_weight=0.0)
    own = {h.chunk_id: h.score for h in plain.search(QUESTION, top_k=50)}  # same 50 a list
    weight = retriever.section_weight
    assert weight == DEFAULT_SECTION_WEIGHT
    hits = retriever.search(QUESTION, top_k=50)
    added: dict[tuple, float] = {}
    checked = [hit for hit in hits if hit.chunk_id in own]
    assert len(checked) >= 30
    for hit in checked:
        section_score = (hit.score - (1 - weight) * own[hit.chunk_id]) / weight
        assert 0 <= section_score <= 1 + 1e-6
        key = (hit.source, hit.heading, hit.page)
        assert section_score == pytest.approx(added.setdefault(key, section_score), abs=1e-6)
        assert (hit.section_rank is None) == (section_score == pytest.approx(0, abs=1e-9))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_reingest_with_other_section_tokens_replaces_the_rows_exactly(tmp_path, settings, embedder):
    from ingest.pipeline import Ingestor
    from rag.store import CollectionProfile, MilvusStore

    files = milvus_docs_subset()[:2]
    store = MilvusStore.open(str(tmp_path / "m.db"), "docs", CollectionProfile.of(embedder))
    try:
        for tokens in (512, 64, 0):
            chunker = Chunker(embedder.tokenizer, 200, 32, tokens)
            report = Ingestor(store, embedder, chunker).run(files)
            assert not report.failed
            expected = set()
            for path in files:
                document = parse_document(path, path.read_bytes())
                chunks, sections = chunker.rows(document, store.files()[str(path)].file_hash)
                expected |= {c.chunk_id for c in chunks + sections}
            assert {row.chunk_id for row in store.all_rows()} == expected
            assert bool(tokens) == any(row.is_section for row in store.all_rows())
    finally:
        store.close()
