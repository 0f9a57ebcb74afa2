"""Language-aware fusion: chunk languages stored at ingest, the question's language detected,
and the lexical list left out where that language is a minority of the collection's chunks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from pymilvus import CollectionSchema
from pymilvus.milvus_client.index import IndexParams

from ingest.pipeline import Ingestor
from rag.chunking import Chunker
from rag.language import (
    ABSENT_SHARE,
    MIN_CONFIDENCE,
    MIN_SHARE,
    Language,
    choose_lexical,
    detect,
    unread_language_note,
)
from rag.retriever import Retriever
from rag.search import Searcher
from rag.settings import SearchMode
from rag.store import CollectionProfile, MilvusStore
from rag.store.schema import LANGUAGE_FIELD, STRONG
from rag.types import Document, Section

REPO = Path(__file__).resolve().parents[1]
XQUAD = SHARED_DATA / "multilingual" / "xquad_r"
PARAGRAPHS = 6  # the first paragraphs of XQuAD-R, in English and in German (parallel)
QUESTION = "56beb4343aeaaa14008c925b"  # how many points the Panthers' defense gave up
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def unread(lang: str, name: str) -> str:
    """The note of a question in ``lang`` to the packaged all-MiniLM-L6-v2 (card: English)."""
    return (
        f"the question is {name} ({lang}), and the dense model {MINILM} is made for en only: "
        "questions in other languages find more with the multilingual profile "
        "(RAG_PROFILE=multilingual, ingested into a collection of its own)"
    )


def xquad_documents(lang: str, count: int = PARAGRAPHS) -> list[Document]:
    """The first ``count`` paragraphs of XQuAD-R in ``lang`` as documents."""
    with (XQUAD / lang / "corpus.jsonl").open(encoding="utf-8") as lines:
        rows = [json.loads(line) for _, line in zip(range(count), lines, strict=False)]
    return [Document(row["_id"], row["title"], [Section(row["text"])]) for row in rows]


def xquad_question(lang: str) -> str:
    """The question :data:`QUESTION` in ``lang``."""
    with (XQUAD / lang / "queries.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row["_id"] == f"{lang}-{QUESTION}":
                return row["text"]
    raise LookupError(QUESTION)


def ingest(uri: str, embedder, settings, profile: CollectionProfile) -> None:
    """Six English, six German and one Chinese paragraph into collection ``docs`` at ``uri``
    (closed after): Chinese is a minority language there, Russian is absent."""
    store = MilvusStore.open(uri, "docs", profile)
    try:
        chunker = Chunker.from_settings(embedder.tokenizer, settings)  # with section rows
        documents = xquad_documents("en") + xquad_documents("de") + xquad_documents("zh", 1)
        report = Ingestor(store, embedder, chunker).run_documents(documents)
        assert report.chunks_written >= 2 * PARAGRAPHS + 1 and not report.failed
    finally:
        store.close()


@pytest.fixture(scope="module")
def mixed_uri(tmp_path_factory, embedder, settings) -> str:
    """A Milvus Lite db whose collection holds English, German and one Chinese paragraph."""
    uri = str(tmp_path_factory.mktemp("mixed") / "milvus.db")
    ingest(uri, embedder, settings, CollectionProfile.of(embedder))
    return uri


@pytest.fixture
def searcher(mixed_uri, embedder):
    store = MilvusStore.open(mixed_uri, "docs", CollectionProfile.of(embedder))
    yield Searcher(Retriever(store, embedder))
    store.close()


def test_detect_names_the_language_with_its_confidence():
    german = detect("Wie erstelle ich einen Index für dünnbesetzte Vektoren?")
    assert german.code == "de" and german.confidence > 0.9
    assert german.describe() == f"German (de, {german.confidence:.2f})"
    assert detect(xquad_question("zh")).code == "zh"
    assert detect("Milvus 支援非 x86 架構嗎？").code == "zh"  # Traditional Chinese too
    assert detect("狭叶艾纳香是何时被发表的？") == Language("zh", 1.0)  # fastText: Italian
    assert detect("インデックスを作成するには？").code == "ja"  # kana: Japanese
    assert detect("  \n") == Language("", 0.0)
    assert detect("HNSW").confidence < MIN_CONFIDENCE  # an identifier: no language to trust
    assert detect("HNSW").describe().startswith("uncertain (")
    assert Language("kn", 0.07).describe() == "uncertain (kn, 0.07)"
    assert Language("", 0.0).describe() == "unknown"


def test_each_chunk_stores_its_language(searcher):
    store = searcher.retriever.store
    assert store.languages
    rows = store.client.query(
        "docs", filter='id != ""', output_fields=["source", LANGUAGE_FIELD], **STRONG
    )
    assert {row["source"][:2] for row in rows} == {"en", "de", "zh"}
    assert all(row[LANGUAGE_FIELD] == row["source"][:2] for row in rows)
    counts = [store.count_chunks(lang) for lang in ("en", "de", "zh")]
    assert sum(counts) == store.count_chunks() and store.count_chunks("ru") == 0
    assert ABSENT_SHARE <= counts[2] / sum(counts) < MIN_SHARE  # Chinese: a minority


@pytest.mark.parametrize("lang", ["en", "de"])
def test_a_question_in_a_language_of_the_collection_keeps_the_lexical_list(searcher, lang):
    result = searcher.search(xquad_question(lang), top_k=5)
    assert (result.language.code, result.mode, result.lexical) == (lang, SearchMode.HYBRID, True)
    assert result.notes == ([] if lang == "en" else [unread("de", "German")])
    assert any(hit.sparse_rank is not None for hit in result.hits)
    assert result.hits[0].source == f"{lang}-a00p00"  # its own paragraph first


def test_a_question_in_a_minority_language_of_the_collection_is_searched_densely(searcher):
    question = xquad_question("zh")
    result = searcher.search(question, top_k=5)
    assert (result.language.code, result.mode, result.lexical) == ("zh", SearchMode.DENSE, False)
    model_note, note = result.notes
    assert model_note == unread("zh", "Chinese")
    assert re.fullmatch(
        r"lexical list left out: the question is Chinese \(zh\), a minority language of the "
        r"collection \(\d+% of its chunks\), so only the dense list ranks the hits",
        note,
    )
    dense = searcher.search(question, top_k=5, mode=SearchMode.DENSE)
    assert [h.chunk_id for h in result.hits] == [h.chunk_id for h in dense.hits]
    assert all(hit.section_rank is None for hit in result.hits)  # chunks only, no section rows


def test_a_question_in_a_language_the_collection_lacks_keeps_the_lexical_list(searcher):
    """No Russian chunk: the lexical list can match only what languages share (here the
    names and numbers of the question), so it is fused."""
    result = searcher.search(xquad_question("ru"), top_k=5)
    assert (result.language.code, result.mode, result.lexical) == ("ru", SearchMode.HYBRID, True)
    assert result.notes == [unread("ru", "Russian")]
    choice = choose_lexical(result.language, searcher.retriever.store)
    assert (choice.share, choice.lexical) == (0.0, True)


def test_a_low_confidence_language_or_an_asked_mode_keeps_what_was_asked(searcher):
    store = searcher.retriever.store
    unsure = choose_lexical(Language("zh", MIN_CONFIDENCE / 2), store)
    assert (unsure.lexical, unsure.share, unsure.note) == (True, None, None)
    sparse = searcher.search(xquad_question("zh"), top_k=5, mode=SearchMode.SPARSE)
    assert (sparse.mode, sparse.lexical, sparse.notes) == (SearchMode.SPARSE, True, [])


def test_a_question_in_a_language_the_dense_model_was_not_made_for_gets_a_note():
    """The rule on its own: the language known, from enough words, and not on the card."""
    german = "Wie erstelle ich einen Index?"
    note = unread_language_note(german, detect(german), MINILM, ("en",))
    assert note == unread("de", "German")
    chinese = "Milvus 的数据存储在哪里？"  # no spaces: its Han characters count as words
    assert unread_language_note(chinese, detect(chinese), MINILM, ("en",)) == unread(
        "zh", "Chinese"
    )
    english = "How do I create a sparse vector index?"
    assert unread_language_note(english, detect(english), MINILM, ("en",)) is None
    assert unread_language_note(german, detect(german), "m", ()) is None  # card unknown
    assert unread_language_note(german, detect(german), "m", ("en", "de")) is None
    assert unread_language_note(german, Language("de", MIN_CONFIDENCE / 2), "m", ("en",)) is None
    keywords = "json path index"  # detected as Czech with confidence, but three words
    assert detect(keywords).code not in ("", "en")
    assert detect(keywords).confidence >= MIN_CONFIDENCE
    assert unread_language_note(keywords, detect(keywords), MINILM, ("en",)) is None


def test_the_packaged_embedder_reads_its_languages_from_the_model_card(embedder):
    assert embedder.languages == ("en",)


def test_a_collection_of_schema_v2_opens_and_searches_with_its_lexical_list(
    tmp_path, embedder, settings, monkeypatch
):
    # What schema v2 made: the same collection without the language field, recorded as v2.
    add_field, add_index = CollectionSchema.add_field, IndexParams.add_index
    monkeypatch.setattr(
        CollectionSchema,
        "add_field",
        lambda self, name, *args, **kwargs: (
            self if name == LANGUAGE_FIELD else add_field(self, name, *args, **kwargs)
        ),
    )
    monkeypatch.setattr(
        IndexParams,
        "add_index",
        lambda self, name, *args, **kwargs: (
            None if name == LANGUAGE_FIELD else add_index(self, name, *args, **kwargs)
        ),
    )
    uri = str(tmp_path / "milvus.db")
    ingest(uri, embedder, settings, replace(CollectionProfile.of(embedder), schema_version=2))
    monkeypatch.undo()

    store = MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))
    try:
        assert store.profile.schema_version == 2 and not store.languages
        result = Searcher(Retriever(store, embedder)).search(xquad_question("zh"), top_k=5)
        assert (result.language.code, result.mode, result.lexical) == ("zh", "hybrid", True)
        assert result.notes == [unread("zh", "Chinese")] and len(result.hits) == 5
        assert {chunk.language for chunk in store.all_chunks()} == {""}
    finally:
        store.close()


def test_the_cli_shows_the_question_language_and_when_the_lexical_list_is_left_out(mixed_uri):
    result = subprocess.run(
        [sys.executable, "-m", "rag", "search", xquad_question("zh"), "--db", mixed_uri,
         "--collection", "docs", "--top-k", "2"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env=os.environ | {"RAG_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert re.match(r"question language: Chinese \(zh, [01]\.\d\d\)$", first)
    warning = " ".join(result.stderr.split())
    assert "warning lexical list left out: the question is Chinese (zh), a minority" in warning
    assert "warning " + unread("zh", "Chinese") in warning
