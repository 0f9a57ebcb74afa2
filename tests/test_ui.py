"""The Streamlit chat page, run by Streamlit's AppTest against real Milvus Lite dbs and a
scripted OpenAI-compatible endpoint."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    API_KEY,
    MILVUS_DOCS_EN,
    build_api_db,
    free_port,
    milvus_docs_subset,
    serve_db,
)
from fake_llm import FakeLLM, Script
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block, HeadingBase, Markdown, Subheader

from rag.answer import NO_LLM
from rag.retriever import Retriever
from rag.search import Searcher
from rag.settings import SearchMode, get_settings
from rag.store import (
    BM25_FIELD,
    PROFILE_KEY,
    CollectionProfile,
    MilvusStore,
    StoreError,
)
from rag.types import Hit

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "ui" / "app.py"
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
CITATION_LINK = re.compile(r'<a href="#t\d+-passage-\d+">\[\d+\]</a>')


@pytest.fixture
def start_app(monkeypatch):
    """Run the app once against ``(uri, collection)`` and an optional LLM endpoint; the
    settings come from the environment."""

    def start(uri: str, collection: str = "docs", llm: str | None = None) -> AppTest:
        monkeypatch.setenv("RAG_MILVUS_URI", uri)
        monkeypatch.setenv("RAG_COLLECTION", collection)
        if llm:
            monkeypatch.setenv("RAG_LLM_BASE_URL", llm)
        else:
            monkeypatch.delenv("RAG_LLM_BASE_URL", raising=False)
        get_settings.cache_clear()
        return AppTest.from_file(str(APP), default_timeout=120).run()

    yield start
    get_settings.cache_clear()


@pytest.fixture
def fake_llm():
    fake = FakeLLM()
    yield fake
    fake.close()


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
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def ask(at: AppTest, question: str) -> AppTest:
    return at.chat_input(key="question").set_value(question).run()


def rendered_text(markdown: str) -> str:
    """What a reader sees of ``markdown``: CommonMark's HTML without its tags, one line per
    displayed line, without indentation."""
    rendered = COMMONMARK.render(markdown).replace("<br />", "")
    lines = html.unescape(re.sub(r"</?(p|strong)>", "", rendered)).splitlines()
    return "\n".join(line.lstrip("\u00a0") for line in lines if line.strip())


def shown_lines(text: str) -> str:
    """A passage as the page shows it, without indentation: non-blank lines, whitespace runs
    as one space."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def shown_hits(at: AppTest) -> list[dict[str, str]]:
    """Each passage container's heading, stage caption, source caption and text, in order."""
    hits = []
    for node in at.main:
        if isinstance(node, Block) and any(
            isinstance(c, Subheader) for c in node.children.values()
        ):
            title, stages, where, text = (child.value for child in node.children.values())
            hits.append({"title": title, "stages": stages, "where": where, "text": text})
    return hits


def assert_shows(at: AppTest, expected: list[Hit]) -> None:
    """The page shows exactly ``expected`` passages, in order, with their literal fields."""
    assert not at.exception and not at.error
    shown = shown_hits(at)
    assert len(shown) == len(expected) > 0
    for hit, row in zip(expected, shown, strict=True):
        title = escapeHtml(" ".join(hit.title.split()))
        assert COMMONMARK.render(row["title"]) == f"<p>[{hit.rank}] {title}</p>\n"
        assert escapeHtml(hit.source) in COMMONMARK.render(row["where"])
        assert rendered_text(row["text"]) == shown_lines(hit.text)


def assert_no_live_markup(at: AppTest) -> None:
    """No element may render HTML, and no Markdown may form a tag or a link other than a
    citation's link to its passage."""
    assert not at.html
    for node in at:
        if isinstance(node, Markdown | HeadingBase):
            if isinstance(node, Markdown):
                assert not node.proto.allow_html
            rendered = CITATION_LINK.sub("", COMMONMARK.render(node.value))
            assert not any(tag in rendered for tag in ("<a ", "<img", "<script", "<b>", "<em>"))


def test_page_without_question_shows_controls_stats_and_a_hint(start_app, ingested):
    uri, collection, report = ingested
    at = start_app(uri, collection)

    assert not at.exception and not at.error
    settings = get_settings()
    assert at.sidebar.slider(key="top_k").value == settings.top_k
    assert at.sidebar.radio(key="mode").value == settings.mode.value
    assert at.sidebar.radio(key="fusion").value == settings.fusion.value == "convex"
    weights = (at.sidebar.slider(key="dense_weight").value,
               at.sidebar.slider(key="sparse_weight").value)  # fmt: skip
    assert weights == settings.weights
    (per_source,) = at.sidebar.number_input  # no RRF k under convex fusion
    assert (per_source.key, per_source.value) == ("per_source", settings.per_source)
    assert at.sidebar.selectbox(key="reranker").value == settings.reranker == "none"
    assert at.sidebar.text_input(key="source_prefix").value == ""
    toggle = at.sidebar.toggle(key="use_llm")
    assert toggle.value is False and toggle.disabled  # no LLM configured
    assert any("No LLM is configured" in c.value for c in at.sidebar.caption)
    store = MilvusStore.open(uri, collection, create=False)
    files, chunks = len(store.files()), store.count_chunks()
    metrics = {m.label: m.value for m in at.sidebar.metric}
    assert metrics == {"Files": str(files), "Chunks": f"{chunks:,}"}
    assert files == len(report.outcomes) == len(milvus_docs_subset())  # every page was stored
    assert chunks == report.chunks_written > 0
    profile = escapeHtml(store.profile.describe())
    assert any(profile in COMMONMARK.render(c.value) for c in at.sidebar.caption)
    store.close()
    assert shown_hits(at) == [] and at.chat_input(key="question")
    assert any("Ask a question" in c.value for c in at.main.caption)

    at.sidebar.radio(key="fusion").set_value("rrf").run()
    assert at.sidebar.number_input(key="rrf_k").value == settings.rrf_k
    assert "dense_weight" not in [slider.key for slider in at.sidebar.slider]


def test_hybrid_search_without_llm_shows_the_hits_with_stage_ranks_and_why(
    start_app, ingested, retriever
):
    at = ask(start_app(*ingested[:2]), QUERY)

    settings = get_settings()
    expected = (
        Searcher(retriever, per_source=settings.per_source)
        .search(
            QUERY,
            top_k=settings.top_k,
            mode=settings.mode,
            fusion=settings.fusion,
            rrf_k=settings.rrf_k,
            weights=settings.weights,
        )
        .hits
    )
    assert_shows(at, expected)
    assert {Path(h.source).name for h in expected[:5]} & {
        "sparse-inverted-index.md",
        "sparse_vector.md",
    }
    assert len({h.source for h in expected}) == len(expected)  # one passage a page
    for hit, row in zip(expected, shown_hits(at), strict=True):
        dense = f"dense #{hit.dense_rank}" if hit.dense_rank else "dense –"
        sparse = f"sparse #{hit.sparse_rank}" if hit.sparse_rank else "sparse –"
        section = f" · section #{hit.section_rank}" if hit.section_rank else ""
        fused = f"fused #{hit.fused_rank}"  # its rank before the cap of one passage a page
        assert row["stages"] == f"{dense} · {sparse}{section} · {fused} · score {hit.score:.4f}"
    assert any(hit.section_rank for hit in expected)
    (warning,) = at.warning
    assert rendered_text(warning.value) == f"No generated answer: {NO_LLM}"
    assert [m.name for m in at.main.chat_message] == ["user", "assistant"]
    assert_no_live_markup(at)


def test_sparse_matched_terms_are_bold_in_the_passages(start_app, ingested, retriever):
    at = ask(start_app(*ingested[:2]), QUERY)

    assert retriever.embedder.query_terms(QUERY)[:3] == ["How", "do", "I"]  # stop words
    terms = Searcher(retriever).matched_terms(QUERY, SearchMode.HYBRID)
    assert terms == ["create", "sparse", "vector", "index"]
    caption = "Sparse-matched terms in bold: create, sparse, vector, index"
    assert caption in [rendered_text(c.value) for c in at.main.caption]
    bold = {
        word.lower()
        for row in shown_hits(at)
        for word in re.findall(r"<strong>(.*?)</strong>", COMMONMARK.render(row["text"]))
    }
    assert bold and all(any(w.startswith(t) for t in terms) for w in bold)
    assert {"sparse", "vector", "index"} <= bold


@pytest.mark.parametrize("mode", [m for m in SearchMode if m is not SearchMode.HYBRID])
def test_single_mode_search_shows_that_lists_rank_and_raw_score(
    start_app, ingested, retriever, mode
):
    at = start_app(*ingested[:2])
    at.sidebar.radio(key="mode").set_value(mode.value)
    at = ask(at, QUERY)

    assert len(at.sidebar.radio) == 1  # no fusion controls
    assert [n.key for n in at.sidebar.number_input] == ["per_source"]
    settings = get_settings()
    searcher = Searcher(retriever, per_source=settings.per_source)
    expected = searcher.search(QUERY, top_k=settings.top_k, mode=mode).hits
    assert_shows(at, expected)
    for hit, row in zip(expected, shown_hits(at), strict=True):
        # The app encodes the query itself: the last printed digit may differ by float noise.
        stage, score = row["stages"].rsplit(" · score ", 1)
        assert stage == f"{mode.value} #{hit.fused_rank}"
        assert float(score) == pytest.approx(hit.score, rel=1e-4, abs=1e-4)
    hybrid = retriever.search(QUERY, top_k=get_settings().top_k)
    assert [h.score for h in expected] != [h.score for h in hybrid]


def test_invalid_fusion_weights_show_an_error(start_app, ingested):
    at = start_app(*ingested[:2])
    at.sidebar.radio(key="fusion").set_value("weighted").run()
    at.sidebar.slider(key="dense_weight").set_value(0.0)
    at.sidebar.slider(key="sparse_weight").set_value(0.0)
    at = ask(at, QUERY)

    assert not at.exception
    assert [rendered_text(e.value) for e in at.error] == [
        "weights must be non-negative and not all zero"
    ]
    assert shown_hits(at) == []


def test_unavailable_reranker_keeps_the_retrieved_order_with_a_note(start_app, ingested, retriever):
    at = start_app(*ingested[:2])
    at.sidebar.selectbox(key="reranker").set_value("cross-encoder")
    at.sidebar.slider(key="top_k").set_value(3)
    at = ask(at, QUERY)

    assert not at.exception and not at.error
    notes = [rendered_text(w.value) for w in at.warning]
    assert any(
        n.startswith("reranker cross-encoder unavailable, retrieved order kept") for n in notes
    )
    assert_shows(at, Searcher(retriever, per_source=get_settings().per_source)
                 .search(QUERY, top_k=3).hits)  # fmt: skip


def test_streamed_answer_links_its_citations_to_the_passages(start_app, ingested, fake_llm):
    fake_llm.script = Script(
        deltas=[
            "Use ",
            "SPARSE_INVERTED_INDEX",
            " [1]",
            " and [2, 9]",
            "; not [9] <img src=x onerror=alert(7)> [z](javascript:x)",
        ]
    )
    at = start_app(*ingested[:2], llm=fake_llm.base_url)
    assert at.sidebar.toggle(key="use_llm").value is True
    at = ask(at, QUERY)

    assert not at.exception and not at.error and not at.warning
    answer = at.main.chat_message[1].markdown[0].value
    assert COMMONMARK.render(answer) == (
        '<p>Use SPARSE_INVERTED_INDEX <a href="#t0-passage-1">[1]</a> and '
        '<a href="#t0-passage-2">[2]</a>; not [9] &lt;img src=x onerror=alert(7)&gt; '
        "[z](javascript:x)</p>\n"
    )
    headings = [h for h in at.main.subheader]
    assert [h.proto.anchor for h in headings[:2]] == ["t0-passage-1", "t0-passage-2"]
    assert any("cited: [1], [2]" in rendered_text(c.value) for c in at.main.caption)
    request = fake_llm.requests[0]  # each passage: a seeding hit and its neighbours
    blocks = re.findall(r'<passage id="\d+">', request["messages"][-1]["content"])
    assert 1 <= len(blocks) <= get_settings().llm_passages
    assert_no_live_markup(at)

    fake_llm.script = Script(deltas=["Second [1]."])
    at = ask(at, "What is a sparse vector?")  # the first turn stays, anchors stay unique

    assert [m.name for m in at.main.chat_message] == ["user", "assistant"] * 2
    assert '<a href="#t1-passage-1">[1]</a>' in COMMONMARK.render(
        at.main.chat_message[3].markdown[0].value
    )
    anchors = [h.proto.anchor for h in at.main.subheader]
    assert len(anchors) == len(set(anchors)) == 2 * get_settings().top_k


def test_llm_switched_off_or_failing_still_shows_the_passages(start_app, ingested, fake_llm):
    at = start_app(*ingested[:2], llm=fake_llm.base_url)
    at.sidebar.toggle(key="use_llm").set_value(False)
    at = ask(at, QUERY)
    assert [rendered_text(w.value) for w in at.warning] == [
        "No generated answer: answer generation is switched off in the sidebar"
    ]
    assert shown_hits(at) and not fake_llm.requests

    fake_llm.script = Script(status=500, message="boom <b>x</b>")
    at = ask(start_app(*ingested[:2], llm=fake_llm.base_url), QUERY)
    (warning,) = at.warning
    assert rendered_text(warning.value) == (
        f"No generated answer: the LLM at {fake_llm.base_url} answered HTTP 500: boom <b>x</b>"
    )
    assert shown_hits(at) and not at.exception
    assert_no_live_markup(at)


@pytest.mark.slow
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

    at = ask(start_app(uri), "quarantined zebra payload")

    (hit,) = shown_hits(at)
    assert rendered_text(hit["text"]) == shown_lines(
        "Quarantined zebra payload.\n" + "\n".join(PAYLOAD_LINES)
    )
    assert COMMONMARK.render(hit["title"]) == (
        f"<p>[1] {escapeHtml(Path(PLANTED_NAME).stem)}</p>\n"
    )
    assert escapeHtml(str(planted)) in COMMONMARK.render(hit["where"])
    assert_no_live_markup(at)


@pytest.mark.parametrize(
    "text",
    [
        "    indented code",
        "# heading",
        "1. item",
        "- item",
        "> quote",
        "| a | b |",
        "a_b_c *x* __y__ ~~z~~",
        "`code` ``more``",
        "&amp; &#60; &lt;",
        "<https://x.org>",
        "www.example.com",
        "a\\b\\",
        ":red[colour] :material/home: $x^2$",
        "![i](x.png)",
        "line one\nline two\n\n  para",
        "[a]: http://x.org\n[a]",
    ],
)
def test_literal_markdown_renders_as_the_text_itself(app_module, text):
    rendered = COMMONMARK.render(app_module.literal(text))
    assert rendered == f"<p>{escapeHtml(' '.join(text.split()))}</p>\n"
    assert rendered_text(app_module.passage_markdown(text)) == shown_lines(text)
    terms = ["code", "item", "red", "line", "para", "x", "a"]
    tags = re.findall(r"</?(\w+)", COMMONMARK.render(app_module.passage_markdown(text, terms)))
    assert set(tags) <= {"p", "br", "strong"}


def test_highlight_and_answer_markup_stay_literal(app_module):
    passage = "Sparse_vector: a *sparse* index.\n    indexes <b>Index</b> in reindex"
    shown = COMMONMARK.render(app_module.passage_markdown(passage, ["sparse", "index", "in"]))
    assert shown == (
        "<p><strong>Sparse</strong>_vector: a *<strong>sparse</strong>* "
        "<strong>index</strong>.<br />\n\u00a0\u00a0\u00a0\u00a0<strong>indexes</strong> "
        "&lt;b&gt;<strong>Index</strong>&lt;/b&gt; <strong>in</strong> reindex</p>\n"
    )
    answer = app_module.answer_markdown("See [1], [3] and [1, 2].\n\n# x <i>", [1, 2], 4)
    assert COMMONMARK.render(answer) == (
        '<p>See <a href="#t4-passage-1">[1]</a>, [3] and <a href="#t4-passage-1">[1]</a> '
        '<a href="#t4-passage-2">[2]</a>.</p>\n<p># x &lt;i&gt;</p>\n'
    )
    # passage 2 holds hits 2 and 3 (touching chunks) and passage 3 is hit 4: [3] links to it
    merged = app_module.answer_markdown("See [3].", [1, 2, 4], 0)
    assert COMMONMARK.render(merged) == '<p>See <a href="#t0-passage-4">[3]</a>.</p>\n'


def test_stage_line_shows_every_rank_and_the_rerank_score(app_module):
    hit = Hit(
        rank=1,
        score=0.032,
        chunk_id="c",
        source="s",
        title="t",
        heading="",
        page=0,
        text="x",
        dense_rank=4,
        sparse_rank=None,
        fused_rank=3,
        rerank_score=0.87,
    )
    assert app_module.stage_line(hit, SearchMode.HYBRID) == (
        "dense #4 · sparse – · fused #3 · score 0.0320 · rerank 0.8700"
    )
    assert app_module.stage_line(hit, SearchMode.BM25) == "bm25 #3 · score 0.0320 · rerank 0.8700"
    hit.section_rank = 2
    assert app_module.stage_line(hit, SearchMode.HYBRID) == (
        "dense #4 · sparse – · section #2 · fused #3 · score 0.0320 · rerank 0.8700"
    )


def test_missing_collection_shows_the_stores_message(start_app, ingested, embedder):
    at = start_app(ingested[0], "no_such_collection")

    with pytest.raises(StoreError) as raised:
        Retriever.from_settings(get_settings(), embedder)
    assert not at.exception
    assert [e.value for e in at.error] == [str(raised.value)]
    assert "no_such_collection" in str(raised.value)
    assert not at.chat_input


def test_locked_db_shows_the_stores_message(start_app, tmp_path, embedder):
    uri = str(tmp_path / "locked.db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pymilvus import MilvusClient; "
            f"c = MilvusClient(uri={uri!r}); print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
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
    assert not at.chat_input


# ---------------------------------------------------------------- faults
@pytest.mark.parametrize(
    ("script", "expected", "requests"),
    [
        (Script(delay=3.0), "timed out (RAG_LLM_TIMEOUT)", 2),
        (Script(status=429, message="rate limit reached"), "answered HTTP 429: rate limit", 2),
        (Script(status=503, message="overloaded"), "answered HTTP 503: overloaded", 2),
        (Script(raw=b"data: {not json\n\n"), "sent a malformed response", 1),
        (Script(raw=b'data: {"choices": 7}\n\n'), "sent a malformed response", 1),
        (None, "cannot be reached", 0),  # connection refused
    ],
    ids=["timeout", "429", "5xx", "malformed-json", "malformed-chunk", "refused"],
)
def test_each_llm_fault_shows_its_reason_under_the_passages(
    start_app, ingested, fake_llm, monkeypatch, script, expected, requests
):
    monkeypatch.setenv("RAG_LLM_TIMEOUT", "1")
    url = fake_llm.base_url if script else f"http://127.0.0.1:{free_port()}/v1"
    fake_llm.script = script or Script()
    at = ask(start_app(*ingested[:2], llm=url), QUERY)

    assert not at.exception and not at.error
    (warning,) = at.warning
    reason = rendered_text(warning.value)
    assert reason.startswith(f"No generated answer: the LLM at {url} ") and expected in reason
    assert "\n" not in reason and "Traceback" not in reason
    assert len(shown_hits(at)) == get_settings().top_k
    assert len(fake_llm.requests) == requests  # one retry of a retryable failure, no more
    assert_no_live_markup(at)


@pytest.fixture(scope="module")
def api_db(tmp_path_factory):
    """An OpenAI + SPLADE db (``conftest.build_api_db``) and its embeddings API; ``(fake, uri)``."""
    fake = FakeLLM()
    yield fake, build_api_db(tmp_path_factory.mktemp("api_db"), fake.base_url)
    fake.close()


@pytest.fixture
def api_env(monkeypatch, api_db):
    """The environment of the app on ``api_db``: the fake's URL and key, one retry."""
    fake, _ = api_db
    for key, value in {
        "RAG_OPENAI_BASE_URL": fake.base_url,
        "RAG_OPENAI_API_KEY": API_KEY,
        "RAG_MAX_RETRIES": "1",
        "RAG_RETRY_BACKOFF": "0.01",
        "RAG_REQUEST_TIMEOUT": "1",
    }.items():
        monkeypatch.setenv(key, value)
    fake.embedding_script = Script()
    yield fake
    fake.embedding_script = Script()


@pytest.mark.parametrize(
    ("script", "expected", "requests"),
    [
        (Script(status=429, message="slow down"), "failed 2 times; last: HTTP 429", 2),
        (Script(status=502, message="bad gateway"), "failed 2 times; last: HTTP 502", 2),
        (Script(delay=2.0), "failed 2 times; last: ReadTimeout", 2),
        (Script(raw=b"<html>bad gateway</html>"), "answered with a body that is not JSON", 1),
        (Script(raw=b'{"data": 5}'), "unexpected answer", 1),
    ],
    ids=["429", "5xx", "timeout", "not-json", "malformed-json"],
)
def test_a_failing_embedding_api_gives_full_text_matches_and_the_reason(
    start_app, api_db, api_env, script, expected, requests
):
    at = start_app(api_db[1])
    assert not at.exception and not at.error
    api_env.embedding_script = script
    before = len(api_env.embedding_requests)
    at = ask(at, QUERY)

    assert not at.exception and not at.error
    assert len(api_env.embedding_requests) - before == requests
    notes = [rendered_text(w.value) for w in at.warning]
    (note,) = [n for n in notes if not n.startswith("No generated answer")]
    assert note.startswith(
        "the query could not be embedded, so these are full-text matches: OpenAI"
    )
    assert expected in note and API_KEY not in note
    store = MilvusStore.open(api_db[1], "docs")  # Milvus full-text search, directly
    matches, pages = store.search(BM25_FIELD, [QUERY], 1000), set()
    store.close()
    first_per_page = [  # one passage a page (RAG_PER_SOURCE=1), in Milvus's order
        raw
        for raw in matches
        if raw["entity"]["source"] not in pages and not pages.add(raw["entity"]["source"])
    ]
    expected_titles = [
        f"[{rank}] {raw['entity']['title']}"
        for rank, raw in enumerate(first_per_page[: get_settings().top_k], 1)
    ]
    shown = shown_hits(at)
    assert [rendered_text(h["title"]) for h in shown] == expected_titles
    assert all(re.fullmatch(r"bm25 #\d+ · score [\d.]+", h["stages"]) for h in shown)


def test_an_embedding_api_down_at_start_is_a_clear_error(start_app, api_db, api_env, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/v1"
    monkeypatch.setenv("RAG_OPENAI_BASE_URL", url)
    at = start_app(api_db[1])

    assert not at.exception
    (error,) = at.error
    assert error.value.startswith(f"OpenAI: POST {url}/embeddings failed 2 times; last: Connect")
    assert not at.chat_input


def page_text(at: AppTest) -> str:
    """Everything the page holds: each element's protobuf as text, and each text value as a
    reader sees it (Markdown rendered)."""
    parts = []
    for node in at:
        parts.append(str(getattr(node, "proto", "")))
        value = getattr(node, "value", None)
        if isinstance(value, str):
            parts.append(rendered_text(value))
    return "\n".join(parts)


def test_api_keys_never_reach_the_page(start_app, api_db, api_env, fake_llm, monkeypatch):
    """The key of the LLM and of the embedding API, echoed back by failing servers, or in the
    LLM's URL, appears nowhere on the page."""
    monkeypatch.setenv("RAG_LLM_API_KEY", API_KEY)

    def failing(llm: str, llm_script: Script) -> AppTest:
        api_env.embedding_script = Script()  # the app starts (it embeds a probe)
        at = start_app(api_db[1], llm=llm)
        api_env.embedding_script = Script(status=400, message="bad request for {auth}")
        fake_llm.script = llm_script
        return ask(at, QUERY)

    echoed = failing(fake_llm.base_url, Script(status=401, message="Incorrect API key: {auth}"))
    port = fake_llm.server.server_port
    in_url = failing(
        f"http://user:{API_KEY}@127.0.0.1:{port}/v1", Script(status=503, message="overloaded")
    )

    assert fake_llm.headers[0]["authorization"] == f"Bearer {API_KEY}"  # the key was sent
    assert api_env.embedding_requests  # and the embedding API was called
    for at, llm_reason in ((echoed, "answered HTTP 401"), (in_url, "answered HTTP 503")):
        assert not at.exception and not at.error
        text = page_text(at)
        assert "rejected the request (HTTP 400)" in text and "for Bearer ***" in text
        assert llm_reason in text and API_KEY not in text
    assert f"http://127.0.0.1:{port}/v1" in page_text(in_url)  # the URL, without its key


def test_a_collection_of_another_schema_or_profile_says_the_way_out(
    start_app, tmp_path, embedder, monkeypatch
):
    uri = str(tmp_path / "old.db")
    for name in ("old", "current"):
        MilvusStore.open(uri, name, CollectionProfile.of(embedder)).close()
    store = MilvusStore.open(uri, "old")
    record = json.loads(store.read_record(PROFILE_KEY))
    store.write_records({PROFILE_KEY: json.dumps(record | {"schema_version": 0})})
    store.close()

    old = start_app(uri, "old")
    monkeypatch.setenv("RAG_PROFILE", "bge-m3")
    other_profile = start_app(uri, "current")

    for at, reason in (
        (old, "was built with schema v0 of this tool"),
        (other_profile, "but the settings ask for profile 'bge-m3'"),
    ):
        assert not at.exception and not at.chat_input
        (error,) = at.error
        assert reason in error.value and "python -m ingest PATH --reset" in error.value


# ---------------------------------------------------------------- concurrent use
def ingest_cli(folder: Path, uri: str, **env: str) -> subprocess.Popen:
    """`python -m ingest FOLDER --db URI` in a process of its own (one torch thread)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", str(folder), "--db", uri],
        cwd=REPO,
        env={**os.environ, "RAG_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def pages_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        shutil.copy(MILVUS_DOCS_EN / "userGuide/indexes/floating-vector" / name, folder)
    return folder


def holds_lock(db: Path, pid: int) -> bool:
    """Whether process ``pid`` holds the Milvus Lite db's lock (read from /proc/locks, which
    probing the lock ourselves would disturb)."""
    from rag.store.lite import engine

    lock = engine().lock_file(db)
    if not lock.exists():
        return False
    inode = lock.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if (
            fields[1] in ("POSIX", "FLOCK")
            and fields[4] == str(pid)
            and fields[5].endswith(f":{inode}")
        ):
            return True
    return False


def test_an_ingest_while_the_app_holds_the_lite_db_is_told_what_to_do(
    start_app, ingested, tmp_path
):
    uri, collection, _ = ingested
    at = start_app(uri, collection)  # this process now has the db open
    assert not at.error and at.chat_input
    files = {m.label: m.value for m in at.sidebar.metric}["Files"]

    ingest = ingest_cli(pages_folder(tmp_path / "docs", ["hnsw.md"]), uri)
    out, err = ingest.communicate(timeout=600)

    assert ingest.returncode == 2 and out == ""
    assert {m.label: m.value for m in at.run().sidebar.metric}["Files"] == files  # none added
    message = " ".join(err.split())
    assert f"the Milvus Lite db {uri} is in use by another process" in message
    assert "python -m rag serve-db" in message
    assert "RAG_MILVUS_URI=http://127.0.0.1:19530" in message
    assert "Traceback" not in err


@pytest.mark.slow
def test_the_app_while_an_ingest_holds_the_lite_db_says_what_to_do(start_app, tmp_path):
    db = tmp_path / "busy.db"
    names = ["hnsw.md", "ivf-pq.md", "ivf-flat.md", "scann.md"]
    ingest = ingest_cli(pages_folder(tmp_path / "docs", names), str(db))
    try:
        deadline = time.monotonic() + 600
        while not holds_lock(db, ingest.pid):
            assert ingest.poll() is None, ingest.communicate()
            assert time.monotonic() < deadline, "the ingest never opened the db"
            time.sleep(0.2)
        at = start_app(str(db))
        assert ingest.poll() is None, "the ingest ended before the app opened: inconclusive"
    finally:
        out, err = ingest.communicate(timeout=1200)

    assert not at.exception and not at.chat_input
    (error,) = at.error
    assert f"the Milvus Lite db {db} is in use by another process" in error.value
    assert "python -m rag serve-db" in error.value
    assert ingest.returncode == 0, err
    assert f"files: {len(names)} added" in out

    at = start_app(str(db))  # the ingest ended: the app opens the db
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.sidebar.metric}["Files"] == str(len(names))


@pytest.mark.slow
def test_the_app_and_an_ingest_share_a_served_db(start_app, tmp_path, settings, embedder):
    from ingest.pipeline import Ingestor
    from rag.chunking import Chunker

    served = tmp_path / "served.db"
    server, uri = serve_db(served, tmp_path / "serve-db.log")
    try:
        store = MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))
        chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
        first = MILVUS_DOCS_EN / "userGuide/indexes/sparse/sparse-inverted-index.md"
        assert not Ingestor(store, embedder, chunker).run([first]).failed
        store.close()
        at = start_app(uri)
        assert not at.exception and not at.error

        names = ["hnsw.md", "ivf-pq.md", "flat.md"]
        ingest = ingest_cli(pages_folder(tmp_path / "docs", names), uri)
        asked = 0
        while ingest.poll() is None:  # the app keeps answering during the ingest
            at = ask(at, QUERY)
            asked += 1
            assert not at.exception and not at.error
            assert len(shown_hits(at)) > 0
        out, err = ingest.communicate()
        assert ingest.returncode == 0, err
        assert f"files: {len(names)} added" in out and asked >= 1

        shown_before = len(shown_hits(at))
        at = ask(at, "What does efConstruction control in HNSW?")
        assert not at.exception and not at.error
        assert {m.label: m.value for m in at.sidebar.metric}["Files"] == str(len(names) + 1)
        last_turn = shown_hits(at)[shown_before:]
        assert "hnsw.md" in rendered_text(last_turn[0]["where"])
    finally:
        server.terminate()
        server.wait(timeout=60)

    at.run()  # the server is gone: the page says so
    assert not at.exception
    (error,) = at.error
    assert rendered_text(error.value).startswith(f"Milvus at {uri} failed: ")
    assert "python -m rag serve-db" in rendered_text(error.value)
