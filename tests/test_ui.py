"""The Streamlit page, run by Streamlit's AppTest against real Milvus Lite dbs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import milvus_docs_subset
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block, Markdown, Text

from rag.retriever import Retriever
from rag.settings import SearchMode, get_settings
from rag.store import MilvusStore, StoreError

APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"
QUERY = "How do I create a sparse vector index?"
COMMONMARK = MarkdownIt("commonmark").enable(["table", "strikethrough"])
PAYLOAD_LINES = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "[click](javascript:alert(3))",
    "<b>bold</b> **stars** `tick` :red[colour] $x^2$ &amp; <https://example.com>",
]
# A file name is document text too: it becomes the title of a .txt file.
PLANTED_NAME = "[x](javascript:alert(5)) <img src=y onerror=alert(4)> *notes*.txt"


@pytest.fixture
def start_app(monkeypatch):
    """Run the app once against ``(uri, collection)``; the settings come from the environment."""

    def start(uri: str, collection: str = "docs") -> AppTest:
        monkeypatch.setenv("RAG_MILVUS_URI", uri)
        monkeypatch.setenv("RAG_COLLECTION", collection)
        get_settings.cache_clear()
        return AppTest.from_file(str(APP), default_timeout=120).run()

    yield start
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def retriever(ingested, embedder):
    """A retriever of our own on the ingested db (Milvus Lite shares it within the process)."""
    uri, collection, _ = ingested
    settings = get_settings().model_copy(update={"milvus_uri": uri, "collection": collection})
    retriever = Retriever.from_settings(settings, embedder)
    yield retriever
    retriever.store.close()


@pytest.fixture(scope="module")
def app_module():
    """ui/app.py imported as a module (its page is built only when run as ``__main__``)."""
    spec = importlib.util.spec_from_file_location("rag_ui_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def search(at: AppTest, query: str) -> AppTest:
    return at.text_input(key="query").input(query).run()


def shown_hits(at: AppTest) -> list[dict[str, str]]:
    """Each hit container's title, stage caption, source caption and passage, in order."""
    hits = []
    for node in at.main:
        if isinstance(node, Block) and any(isinstance(c, Text) for c in node.children.values()):
            title, stages, where, text = (child.value for child in node.children.values())
            hits.append({"title": title, "stages": stages, "where": where, "text": text})
    return hits


def assert_shows(at: AppTest, expected: list) -> None:
    """The page shows exactly ``expected`` hits, in order, with their literal fields."""
    assert not at.exception and not at.error
    shown = shown_hits(at)
    assert len(shown) == len(expected) > 0
    for hit, row in zip(expected, shown, strict=True):
        title = escapeHtml(" ".join(hit.title.split()))
        assert COMMONMARK.render(row["title"]) == f"<p><strong>{hit.rank}. {title}</strong></p>\n"
        assert escapeHtml(hit.source) in COMMONMARK.render(row["where"])
        assert row["text"] == hit.text.strip()


def assert_no_live_markup(at: AppTest) -> None:
    """No element may render HTML, and no Markdown element may form a tag or a link."""
    assert not at.html
    for node in at:
        if isinstance(node, Markdown):
            assert not node.proto.allow_html
            rendered = COMMONMARK.render(node.value)
            assert not any(tag in rendered for tag in ("<a ", "<img", "<script", "<b>", "<em>"))


def test_page_without_query_shows_controls_stats_and_a_hint(start_app, ingested):
    uri, collection, report = ingested
    at = start_app(uri, collection)

    assert not at.exception and not at.error
    settings = get_settings()
    assert at.sidebar.slider(key="top_k").value == settings.top_k
    assert at.sidebar.radio(key="mode").value == settings.mode.value
    assert at.sidebar.radio(key="fusion").value == settings.fusion.value
    assert at.sidebar.number_input(key="rrf_k").value == settings.rrf_k
    assert at.sidebar.text_input(key="source_prefix").value == ""
    store = MilvusStore.open(uri, collection, create=False)
    files, chunks = len(store.files()), store.count_chunks()
    metrics = {m.label: m.value for m in at.sidebar.metric}
    assert metrics == {"Files": str(files), "Chunks": f"{chunks:,}"}
    assert files == len(report.outcomes) == len(milvus_docs_subset())  # every page was stored
    assert chunks == report.chunks_written > 0
    profile = escapeHtml(store.profile.describe())
    assert any(profile in COMMONMARK.render(c.value) for c in at.sidebar.caption)
    store.close()
    assert shown_hits(at) == []
    assert any("Type a question" in c.value for c in at.main.caption)

    at.sidebar.radio(key="fusion").set_value("weighted").run()
    assert not at.sidebar.number_input
    assert [s.value for s in at.sidebar.slider][1:] == list(settings.weights)


def test_hybrid_search_shows_the_retrievers_hits_with_stage_ranks(start_app, ingested, retriever):
    at = search(start_app(*ingested[:2]), QUERY)

    settings = get_settings()
    expected = retriever.search(
        QUERY, top_k=settings.top_k, mode=settings.mode, fusion=settings.fusion,
        rrf_k=settings.rrf_k, weights=settings.weights,
    )
    assert_shows(at, expected)
    assert {Path(h.source).name for h in expected[:5]} & {"sparse-inverted-index.md",
                                                         "sparse_vector.md"}
    for hit, row in zip(expected, shown_hits(at), strict=True):
        dense = f"dense #{hit.dense_rank}" if hit.dense_rank else "dense –"
        sparse = f"sparse #{hit.sparse_rank}" if hit.sparse_rank else "sparse –"
        assert row["stages"] == f"{dense} · {sparse} · fused score {hit.score:.4f}"
    assert_no_live_markup(at)


@pytest.mark.parametrize("mode", [m for m in SearchMode if m is not SearchMode.HYBRID])
def test_single_mode_search_shows_that_lists_rank_and_raw_score(
    start_app, ingested, retriever, mode
):
    at = start_app(*ingested[:2])
    at.sidebar.radio(key="mode").set_value(mode.value)
    at = search(at, QUERY)

    assert len(at.sidebar.radio) == 1 and not at.sidebar.number_input  # no fusion controls
    expected = retriever.search(QUERY, top_k=get_settings().top_k, mode=mode)
    assert_shows(at, expected)
    for hit, row in zip(expected, shown_hits(at), strict=True):
        assert row["stages"] == f"{mode.value} #{hit.rank} · score {hit.score:.4f}"
    hybrid = retriever.search(QUERY, top_k=get_settings().top_k)
    assert [h.score for h in expected] != [h.score for h in hybrid]


def test_invalid_fusion_weights_show_an_error(start_app, ingested):
    at = start_app(*ingested[:2])
    at.sidebar.radio(key="fusion").set_value("weighted").run()
    at.sidebar.slider(key="dense_weight").set_value(0.0)
    at.sidebar.slider(key="sparse_weight").set_value(0.0)
    at = search(at, QUERY)

    assert not at.exception
    assert [e.value for e in at.error] == ["weights must be non-negative and not all zero"]
    assert shown_hits(at) == []


def test_document_text_is_shown_literally(start_app, tmp_path, settings, embedder):
    from ingest.pipeline import Ingestor
    from rag.chunking import Chunker
    from rag.store import CollectionProfile

    planted = tmp_path / "docs" / PLANTED_NAME
    planted.parent.mkdir()
    planted.write_text("Quarantined zebra payload.\n\n" + "\n".join(PAYLOAD_LINES) + "\n")
    uri = str(tmp_path / "planted.db")
    store = MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))
    chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
    report = Ingestor(store, embedder, chunker).run([planted])
    assert report.chunks_written > 0 and not report.failed
    store.close()

    at = search(start_app(uri), "quarantined zebra payload")

    (hit,) = shown_hits(at)
    assert hit["text"] == "Quarantined zebra payload.\n\n" + "\n".join(PAYLOAD_LINES)
    assert COMMONMARK.render(hit["title"]) == (
        f"<p><strong>1. {escapeHtml(Path(PLANTED_NAME).stem)}</strong></p>\n"
    )
    assert escapeHtml(str(planted)) in COMMONMARK.render(hit["where"])
    assert_no_live_markup(at)


@pytest.mark.parametrize(
    "text",
    [
        "    indented code", "# heading", "1. item", "- item", "> quote", "| a | b |",
        "a_b_c *x* __y__ ~~z~~", "`code` ``more``", "&amp; &#60; &lt;", "<https://x.org>",
        "www.example.com", "a\\b\\", ":red[colour] :material/home: $x^2$", "![i](x.png)",
        "line one\nline two\n\n  para", "[a]: http://x.org\n[a]",
    ],
)
def test_literal_markdown_renders_as_the_text_itself(app_module, text):
    rendered = COMMONMARK.render(app_module.literal(text))
    assert rendered == f"<p>{escapeHtml(' '.join(text.split()))}</p>\n"


def test_missing_collection_shows_the_stores_message(start_app, ingested, embedder):
    at = start_app(ingested[0], "no_such_collection")

    with pytest.raises(StoreError) as raised:
        Retriever.from_settings(get_settings(), embedder)
    assert not at.exception
    assert [e.value for e in at.error] == [str(raised.value)]
    assert "no_such_collection" in str(raised.value)
    assert not at.text_input


def test_locked_db_shows_the_stores_message(start_app, tmp_path, embedder):
    uri = str(tmp_path / "locked.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pymilvus import MilvusClient; "
         f"c = MilvusClient(uri={uri!r}); print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        at = start_app(uri)
        with pytest.raises(StoreError) as raised:
            Retriever.from_settings(get_settings(), embedder)
    finally:
        holder.kill()
        holder.wait()
    assert not at.exception
    assert [e.value for e in at.error] == [str(raised.value)]
    assert uri in str(raised.value)
    assert not at.text_input
