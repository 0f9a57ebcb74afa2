"""Hybrid search on real ingested Milvus docs: known answers, fusion arithmetic, filters, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HIT_JSON_FIELDS, SHARED_DATA, ingest_folder

from rag.embedders.hybrid import DenseSparseEmbedder
from rag.http import APIError
from rag.retriever import Retriever, source_prefix_filter
from rag.search import Searcher, term_pattern
from rag.settings import Fusion, Normalisation, SearchMode, Settings
from rag.store import CollectionProfile, MilvusStore

REPO = Path(__file__).resolve().parents[1]

# Questions whose answer is on a known page of the ingested subset.
KNOWN = [
    ("How do I create a sparse vector index?", {"sparse-inverted-index.md", "sparse_vector.md"}),
    ("What does efConstruction control when building an HNSW graph?", {"hnsw.md"}),
    ("How does product quantization split vectors into subvectors?", {"ivf-pq.md", "hnsw-pq.md"}),
    ("Which index stores vectors on SSD for billion-scale search?", {"diskann.md", "aisaq.md"}),
]


def top_pages(hits, k=5):
    return [Path(h.source).name for h in hits[:k]]


@pytest.mark.parametrize("question,pages", KNOWN)
def test_hybrid_finds_the_page_that_answers(retriever, question, pages):
    assert pages & set(top_pages(retriever.search(question, top_k=5)))


@pytest.mark.parametrize("mode", [SearchMode.DENSE, SearchMode.SPARSE, SearchMode.BM25])
def test_single_modes_work(retriever, mode):
    hits = retriever.search(KNOWN[0][0], top_k=5, mode=mode)
    assert len(hits) == 5
    assert KNOWN[0][1] & set(top_pages(hits))
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_bm25_ignores_case(retriever):
    """Milvus's BM25 analyzes chunks and query alike, lowercased: the docs write "HNSW" and
    "efConstruction", and the question in any case finds the same chunks with the same
    scores (a tokenizer without the lowercase filter matches no chunk for the lowercase
    one)."""
    question = "HNSW efConstruction graph"
    hits = retriever.search(question, top_k=5, mode=SearchMode.BM25)
    assert "hnsw.md" in top_pages(hits)
    for variant in (question.lower(), question.upper()):
        same = retriever.search(variant, top_k=5, mode=SearchMode.BM25)
        assert [(h.chunk_id, round(h.score, 4)) for h in same] == [
            (h.chunk_id, round(h.score, 4)) for h in hits
        ]


@pytest.mark.slow
def test_an_ivf_flat_collection_is_searched_with_its_own_parameters(
    tmp_path, embedder, settings, docs_folder
):
    uri = str(tmp_path / "ivf.db")
    ingest_folder(uri, settings, embedder, docs_folder, dense_index="IVF_FLAT")
    store = MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))  # the FLAT default
    try:
        assert store.client.describe_index("docs", "dense")["index_type"] == "IVF_FLAT"
        assert store.dense_search_params == {"metric_type": "IP", "params": {"nprobe": 32}}
        retriever = Retriever(store, embedder, candidates=50)
        for question, pages in KNOWN:
            assert pages & set(top_pages(retriever.search(question, top_k=5)))
            dense = retriever.search(question, top_k=5, mode=SearchMode.DENSE)
            assert pages & set(top_pages(dense))
    finally:
        store.close()


def test_an_unknown_dense_index_is_refused():
    with pytest.raises(ValueError, match="unknown dense index 'IVF_PQ': use one of FLAT, HNSW"):
        MilvusStore(None, "docs", dense_index="IVF_PQ")


def test_rrf_scores_are_the_sum_of_reciprocal_ranks(retriever):
    hits = retriever.search(KNOWN[1][0], top_k=10, fusion=Fusion.RRF, rrf_k=60)
    assert any(h.dense_rank and h.sparse_rank for h in hits)
    for hit in hits:
        expected = sum(1 / (60 + r) for r in (hit.dense_rank, hit.sparse_rank) if r)
        assert hit.score == pytest.approx(expected, rel=1e-4)


def test_weighted_fusion_with_all_weight_on_dense_follows_dense(retriever):
    question = KNOWN[2][0]
    dense = retriever.search(question, top_k=8, mode=SearchMode.DENSE)
    fused = retriever.search(question, top_k=8, fusion=Fusion.WEIGHTED, weights=(1.0, 0.0))
    assert [h.chunk_id for h in fused] == [h.chunk_id for h in dense]


def test_source_prefix_restricts_hits(retriever, ingested):
    hits = retriever.search(KNOWN[0][0], top_k=5, source_prefix=str(Path(ingested[0]).parent))
    assert hits == []  # no chunk lives under the db's own folder
    folder = str(Path(retriever.search(KNOWN[1][0], top_k=1)[0].source).parent)
    hits = retriever.search(KNOWN[0][0], top_k=5, source_prefix=f"{folder}/hnsw")
    assert hits and {Path(h.source).name for h in hits} <= {
        "hnsw.md",
        "hnsw-pq.md",
        "hnsw-prq.md",
        "hnsw-sq.md",
    }


def test_a_search_that_finds_nothing_says_why(retriever, embedder, tmp_path):
    searcher = Searcher(retriever)
    result = searcher.search(KNOWN[0][0], source_prefix="/nowhere/")
    assert result.hits == [] and result.notes == [
        "no hits: no chunk's source starts with '/nowhere/'"
    ]
    assert searcher.search(KNOWN[0][0]).notes == []

    store = MilvusStore.open(str(tmp_path / "empty.db"), "docs", CollectionProfile.of(embedder))
    try:
        result = Searcher(Retriever(store, embedder)).search(KNOWN[0][0])
    finally:
        store.close()
    assert result.hits == []
    assert result.notes == [
        "no hits: collection 'docs' holds no chunks yet (python -m ingest PATH adds documents)"
    ]


def test_the_searcher_without_a_reranker_gives_the_retrieved_hits(retriever):
    searcher = Searcher(retriever)
    for mode in SearchMode:
        result = searcher.search(KNOWN[0][0], top_k=5, mode=mode)
        expected = retriever.search(KNOWN[0][0], top_k=5, mode=mode)
        assert (result.mode, result.reranked, result.notes) == (mode, False, [])
        assert [(h.chunk_id, h.rank, h.fused_rank) for h in result.hits] == [
            (h.chunk_id, h.rank, h.rank) for h in expected
        ]
        assert [(h.dense_rank, h.sparse_rank) for h in result.hits] == [
            (h.dense_rank, h.sparse_rank) for h in expected
        ]
    hybrid = searcher.search(KNOWN[0][0], top_k=10).hits
    assert any(h.dense_rank and h.sparse_rank for h in hybrid)


def test_a_failing_embedding_api_gives_full_text_matches_or_raises_without_fallback(
    retriever, monkeypatch
):
    """The OpenAI-compatible API's failure itself is exercised in test_reliability; here the
    retriever's query encoding raises the ``APIError`` such a client raises."""

    def unreachable(query, sides):
        raise APIError("OpenAI: POST /embeddings failed 2 times; last: HTTP 503")

    expected = retriever.search(KNOWN[0][0], top_k=5, mode=SearchMode.BM25)
    monkeypatch.setattr(retriever, "_encode", unreachable)
    result = Searcher(retriever).search(KNOWN[0][0], top_k=5)
    assert (result.mode, result.reranked) == (SearchMode.BM25, False)
    assert [h.chunk_id for h in result.hits] == [h.chunk_id for h in expected]
    assert [h.chunk_id for h in result.retrieved] == [h.chunk_id for h in expected]
    (note,) = result.notes
    assert note.startswith("the query could not be embedded, so these are full-text matches")
    with pytest.raises(APIError, match="HTTP 503"):
        Searcher(retriever, fallback=False).search(KNOWN[0][0], top_k=5)


def test_matched_terms_are_the_weighed_words_worth_showing(retriever, embedder):
    searcher = Searcher(retriever)
    question = "How do I create a sparse vector index for HNSW?"
    assert embedder.query_terms(question)[0] == "How"  # weighed, but not shown
    for mode in (SearchMode.HYBRID, SearchMode.SPARSE):
        terms = searcher.matched_terms(question, mode)
        assert terms == ["create", "sparse", "vector", "index", "HNSW"]
    assert searcher.matched_terms(question, SearchMode.DENSE) == []
    assert searcher.matched_terms(question, SearchMode.BM25) == []  # Milvus analyzes those


def test_term_pattern_marks_words_that_start_with_a_term():
    pattern = term_pattern(["index", "HNSW", "ef", "a_b", "it"])
    text = "Indexes and reindex; HNSW_SQ, hnsw, ef, efConstruction, it, item"
    assert [m.group() for m in pattern.finditer(text)] == [
        "Indexes", "HNSW_SQ", "hnsw", "ef", "it"
    ]  # fmt: skip
    assert term_pattern(["a_b", "?"]) is None


def test_cli_text_output_lists_and_marks_the_matched_terms(ingested):
    uri, collection, _ = ingested
    result = subprocess.run(
        [sys.executable, "-m", "rag", "search", KNOWN[0][0], "--db", uri,
         "--collection", collection, "--top-k", "3"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env=os.environ | {"RAG_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "sparse-matched terms: create, sparse, vector, index"
    ranks = [re.match(r" ?(\d+)\. \d", line) for line in lines]
    assert [int(m.group(1)) for m in ranks if m] == [1, 2, 3]


def test_prefix_filter_quotes_the_prefix():
    assert source_prefix_filter('/d/"x"') == 'source like "/d/\\"x\\"%"'
    assert source_prefix_filter(None) == ""


def test_empty_query_is_an_error(retriever):
    with pytest.raises(ValueError, match="empty"):
        retriever.search("   ")


def test_cli_json_output(ingested):
    uri, collection, _ = ingested
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rag",
            "search",
            KNOWN[0][0],
            "--db",
            uri,
            "--collection",
            collection,
            "--json",
            "--top-k",
            "5",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert set(hits[0]) == HIT_JSON_FIELDS
    assert all(h["rerank_score"] is not None for h in hits)  # the default reranker (auto: maxsim)
    scores = [h["rerank_score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and 0 <= scores[-1] <= scores[0] <= 1
    assert KNOWN[0][1] & {Path(h["source"]).name for h in hits}


def test_cli_on_a_missing_collection_says_what_to_do(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rag", "search", "anything", "--db", str(tmp_path / "new.db")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 2
    assert "python -m ingest" in " ".join(result.stderr.split())


def test_cli_on_an_empty_collection_says_so_and_lists_no_terms(tmp_path, embedder):
    db = str(tmp_path / "empty.db")
    MilvusStore.open(db, "docs", CollectionProfile.of(embedder)).close()
    result = subprocess.run(
        [sys.executable, "-m", "rag", "search", "sparse vector index", "--db", db],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "no hits: collection 'docs' holds no chunks yet" in " ".join(result.stderr.split())
    assert "sparse-matched terms" not in result.stdout


def test_cli_refuses_a_bad_setting_with_its_reason(tmp_path):
    env = os.environ | {"RAG_SPARSE_QUERY_TERMS": "-1"}
    result = subprocess.run(
        [sys.executable, "-m", "rag", "search", "anything", "--db", str(tmp_path / "new.db")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    assert "sparse_query_terms" in result.stderr and "greater than or equal to 0" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["0.7,0.3", "[0.7, 0.3]", " 0.7, 0.3 "])
def test_rag_weights_takes_the_cli_form_or_a_json_list(monkeypatch, value):
    monkeypatch.setenv("RAG_WEIGHTS", value)
    assert Settings(_env_file=None).weights == (0.7, 0.3)


@pytest.mark.parametrize("value", ["abc", "0.7", "1,2,3"])
def test_a_bad_rag_weights_says_what_is_expected(monkeypatch, value):
    monkeypatch.setenv("RAG_WEIGHTS", value)
    with pytest.raises(ValueError, match="expected two numbers: W_DENSE,W_SPARSE"):
        Settings(_env_file=None)


def test_min_max_and_convex_combination_by_hand():
    from rag.fusion import convex_combination, min_max

    assert min_max([4.0, 2.0, 0.0]) == [1.0, 0.5, 0.0]
    assert min_max([3.0, 3.0]) == [1.0, 1.0]
    dense = [("a", 0.9), ("b", 0.7), ("c", 0.5)]  # normalised: a 1, b 0.5, c 0
    sparse = [("c", 30.0), ("d", 20.0), ("a", 10.0)]  # normalised: c 1, d 0.5, a 0
    fused = convex_combination([dense, sparse], (0.6, 0.4), top_k=3)
    # a 0.6, c 0.4, b 0.3, d 0.2
    assert [item for item, _ in fused] == ["a", "c", "b"]
    assert [round(score, 6) for _, score in fused] == [0.6, 0.4, 0.3]
    assert [i for i, _ in convex_combination([dense, sparse], (0.0, 1.0), 2)] == ["c", "d"]
    with pytest.raises(ValueError, match="not all zero"):
        convex_combination([dense, sparse], (0.0, 0.0), 2)


def test_floor_ceiling_by_hand():
    from rag.fusion import convex_combination, floor_ceiling

    assert floor_ceiling([4.0, 2.0, 1.0]) == [0.75, 0.25, 0.0]  # (s − 1) / 4
    assert floor_ceiling([4.0, 2.0, 1.0], self_score=8.0) == [0.375, 0.125, 0.0]  # / q·q
    assert floor_ceiling([4.0, 2.0, 1.0], self_score=2.0) == [0.75, 0.25, 0.0]  # best > q·q
    assert floor_ceiling([3.0], self_score=6.0) == [0.5]  # one hit: floor 0
    assert floor_ceiling([3.0, 3.0]) == [0.0, 0.0]  # a flat list has no say
    assert floor_ceiling([-0.2, -0.5]) == [0.0, 0.0]  # nothing above 0: no ceiling
    assert floor_ceiling([]) == []
    dense = [("a", 0.5), ("b", 0.45), ("c", 0.4)]  # (s − 0.4) / 0.5: a 0.2, b 0.1, c 0
    sparse = [("c", 30.0), ("d", 20.0), ("a", 10.0)]  # (s − 10) / 40: c 0.5, d 0.25, a 0
    fused = convex_combination([dense, sparse], (0.6, 0.4), 3, self_scores=(None, 40.0))
    # c 0.2, a 0.12, d 0.1, b 0.06
    assert [item for item, _ in fused] == ["c", "a", "d"]
    assert [round(score, 6) for _, score in fused] == [0.2, 0.12, 0.1]
    with pytest.raises(ValueError, match="self scores"):
        convex_combination([dense, sparse], (0.6, 0.4), 3, self_scores=(None,))


@pytest.mark.parametrize(
    "question,low,high",
    [
        (KNOWN[1][0], 1.0, 2.0),  # the HNSW page holds every word of the question
        ("Which U.S. state has been admitted latest?", 0.0, 0.5),  # nothing in Milvus docs
    ],
)
def test_convex_fusion_normalises_the_sparse_list_by_the_querys_own_score(
    retriever, embedder, question, low, high
):
    """The fused order is the convex combination of the real lists, each floor–ceiling
    normalised, the sparse list's ceiling q·q of the query's pruned SPLADE vector; with
    ``min-max`` it is the min-max combination."""
    from rag.fusion import convex_combination
    from rag.retriever import prune_query_terms
    from rag.store import sparse_to_milvus

    retriever.section_weight = 0.0  # the chunk lists alone (section rows: test_sections.py)
    vector = sparse_to_milvus(embedder.encode_queries([question]).sparse)[0]
    pruned = prune_query_terms(vector, retriever.sparse_query_terms)
    self_score = sum(w * w for w in pruned.values())
    dense = retriever.search(question, top_k=50, mode=SearchMode.DENSE)
    sparse = retriever.search(question, top_k=50, mode=SearchMode.SPARSE)
    assert low <= sparse[0].score / self_score <= high
    lists = [[(h.chunk_id, h.score) for h in hits] for hits in (dense, sparse)]
    options = {"top_k": 10, "fusion": Fusion.CONVEX, "weights": (0.6, 0.4)}
    assert retriever.normalisation is Normalisation.FLOOR_CEILING
    fused = retriever.search(question, **options)
    expected = convex_combination(lists, (0.6, 0.4), 10, self_scores=(None, self_score))
    assert [(h.chunk_id, round(h.score, 6)) for h in fused] == [
        (i, round(score, 6)) for i, score in expected
    ]
    retriever.normalisation = Normalisation.MIN_MAX
    try:
        plain = retriever.search(question, **options)
    finally:
        retriever.normalisation = Normalisation.FLOOR_CEILING
    assert [h.chunk_id for h in plain] == [i for i, _ in convex_combination(lists, (0.6, 0.4), 10)]


def test_convex_fusion_fuses_the_two_real_lists(retriever):
    question = KNOWN[1][0]
    retriever.section_weight = 0.0  # the chunk lists alone (section rows: test_sections.py)
    dense = retriever.search(question, top_k=50, mode=SearchMode.DENSE)
    sparse = retriever.search(question, top_k=50, mode=SearchMode.SPARSE)
    fused = retriever.search(question, top_k=8, fusion=Fusion.CONVEX, weights=(0.5, 0.5))
    assert [h.rank for h in fused] == list(range(1, 9))
    scores = [h.score for h in fused]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1.0
    by_id = {h.chunk_id: h for h in fused}
    for hit in dense:
        if hit.chunk_id in by_id:
            assert by_id[hit.chunk_id].dense_rank == hit.rank
    for hit in sparse:
        if hit.chunk_id in by_id:
            assert by_id[hit.chunk_id].sparse_rank == hit.rank
    # All weight on one list gives that list's order.
    only_dense = retriever.search(question, top_k=8, fusion=Fusion.CONVEX, weights=(1.0, 0.0))
    assert [h.chunk_id for h in only_dense] == [h.chunk_id for h in dense[:8]]


def test_a_searching_process_runs_torch_on_the_query_threads(ingested):
    import torch

    uri, collection, _ = ingested
    before = torch.get_num_threads()
    try:
        settings = Settings(_env_file=None, milvus_uri=uri, collection=collection,
                            num_threads=2, query_threads=1)  # fmt: skip
        retriever = Retriever.from_settings(settings)
        assert torch.get_num_threads() == 1
        assert retriever.search(KNOWN[1][0], top_k=3)
        retriever.store.close()
    finally:
        torch.set_num_threads(before)


def test_queries_from_several_threads_get_the_answers_of_serial_queries(retriever):
    """Each query encodes and searches its two sides on the retriever's own threads; many
    callers at once (the app's sessions) must still each get their own query's hits."""
    from concurrent.futures import ThreadPoolExecutor

    questions = [question for question, _ in KNOWN] * 2
    serial = [[h.chunk_id for h in retriever.search(q, top_k=10)] for q in questions]
    with ThreadPoolExecutor(max_workers=len(questions)) as callers:
        together = list(callers.map(lambda q: retriever.search(q, top_k=10), questions))
    assert [[h.chunk_id for h in hits] for hits in together] == serial
    assert len({tuple(ids) for ids in serial}) == len(KNOWN)  # the questions differ


def test_int8_query_vectors_find_what_the_torch_ones_find(retriever, embedder):
    """RAG_DENSE_QUERY_INT8 (the default): queries on all-MiniLM-L6-v2's packaged int8 ONNX
    export, documents on torch; real SciFact claims and the ingested docs."""
    from rag.embedders.onnx_int8 import Int8QueryDense

    assert isinstance(embedder.dense, Int8QueryDense)
    int8, torch_dense = embedder.dense, embedder.dense.documents
    scifact = SHARED_DATA / "beir" / "scifact" / "queries.jsonl"
    with scifact.open(encoding="utf-8") as handle:
        claims = [json.loads(line)["text"] for line, _ in zip(handle, range(64), strict=False)]
    torch_vectors, int8_vectors = torch_dense.encode_queries(claims), int8.encode_queries(claims)
    assert int8_vectors.dtype == np.float32 and int8_vectors.shape == (64, 384)
    assert np.allclose(np.linalg.norm(int8_vectors, axis=1), 1.0, atol=1e-5)
    assert 0.998 < (torch_vectors * int8_vectors).sum(axis=1).min() < 0.99999
    texts = claims[:4]
    assert np.array_equal(int8.encode_documents(texts), torch_dense.encode_documents(texts))

    on_torch = Retriever(retriever.store, DenseSparseEmbedder(
        embedder.profile, torch_dense, embedder.sparse, embedder.tokenizer, embedder.max_tokens
    ))  # fmt: skip
    for question, pages in KNOWN:
        hits = retriever.search(question, top_k=10, mode=SearchMode.DENSE)
        assert pages & set(top_pages(hits))
        reference = on_torch.search(question, top_k=10, mode=SearchMode.DENSE)
        assert len({h.chunk_id for h in hits} & {h.chunk_id for h in reference}) >= 8


def test_int8_query_encoding_refuses_another_model_or_a_query_prompt(embedder):
    from rag.embedders.instructor import InstructorDense
    from rag.embedders.multilingual_e5 import MultilingualE5Dense
    from rag.embedders.onnx_int8 import Int8QueryDense, has_int8_export

    minilm = embedder.dense.documents
    instructed = InstructorDense(minilm.name)  # the same weights, queries with an instruction
    assert has_int8_export(minilm) and not has_int8_export(instructed)
    for other in (MultilingualE5Dense(), instructed):
        with pytest.raises(ValueError, match="all-MiniLM-L6-v2 without a query prompt only"):
            Int8QueryDense(other)


def test_a_pruned_sparse_query_searches_with_its_largest_weights_only(retriever, embedder):
    """RAG_SPARSE_QUERY_TERMS: each sparse hit scores the inner product of the query's N
    largest lexical weights with the chunk's stored sparse vector, nothing more."""
    from rag.retriever import prune_query_terms
    from rag.store import SPARSE_FIELD, sparse_to_milvus

    question = KNOWN[0][0]
    query = sparse_to_milvus(embedder.sparse.encode_queries([question]))[0]
    assert len(query) > 8
    top4 = prune_query_terms(query, 4)
    assert sorted(top4.values()) == sorted(query.values())[-4:]
    assert prune_query_terms(query, 0) == query == prune_query_terms(query, len(query))

    pruned = Retriever(retriever.store, embedder, sparse_query_terms=4)
    hits = pruned.search(question, top_k=5, mode=SearchMode.SPARSE)
    rows = retriever.store.client.get(
        retriever.store.collection, ids=[h.chunk_id for h in hits], output_fields=[SPARSE_FIELD]
    )
    stored = {str(row["id"]): row[SPARSE_FIELD] for row in rows}
    for hit in hits:
        document = {int(k): v for k, v in stored[hit.chunk_id].items()}
        expected = sum(weight * document.get(term, 0.0) for term, weight in top4.items())
        assert hit.score == pytest.approx(expected, rel=1e-4)
    unpruned = Retriever(retriever.store, embedder, sparse_query_terms=0)
    full = unpruned.search(question, top_k=5, mode=SearchMode.SPARSE)
    # Dropped terms only add (non-negative) weight: the k-th full score is never lower.
    assert all(a.score >= b.score for a, b in zip(full, hits, strict=True))
    assert [h.score for h in full] != [h.score for h in hits]
