"""The Streamlit chat page, run by Streamlit's AppTest against a real Milvus Lite db and a
scripted OpenAI-compatible endpoint: controls, passages with their stage ranks, the streamed
answer, and document text shown literally."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    milvus_docs_subset,
)
from fake_llm import Script
from markdown_it.common.utils import escapeHtml
from ui_page import (
    APP,
    COMMONMARK,
    QUERY,
    ask,
    assert_no_live_markup,
    assert_shows,
    rendered_text,
    shown_hits,
    shown_lines,
)

from rag.answer import NO_LLM
from rag.rerankers import build_reranker
from rag.retriever import Retriever
from rag.search import Searcher
from rag.settings import SearchMode, get_settings
from rag.store import (
    CollectionProfile,
    MilvusStore,
    StoreError,
)
from rag.types import Hit

PAYLOAD_LINES = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "[click](javascript:alert(3))",
    "<b>bold</b> **stars** `tick` :red[colour] $x^2$ &amp; <https://example.com>",
]
# A file name is document text too: it becomes the title of a .txt file.
PLANTED_NAME = "[x](javascript:alert(5)) <img src=y onerror=alert(4)> *notes*.txt"


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
    assert at.sidebar.selectbox(key="reranker").value == settings.reranker == "auto"
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


# MaxSim runs under bfloat16 autocast on a CPU with native bfloat16, and torch's kernels round
# differently after a torch.set_num_threads call (the page's Retriever.from_settings makes
# one): a MaxSim score moves by up to about 7e-4, and the mixed score, min-max scaled over the
# 30 reranked hits, by up to about 1e-3. The order of the hits, their ranks and their fused
# scores are compared exactly.
RERANK_NOISE = 5e-3


def app_searcher(retriever: Retriever) -> Searcher:
    """The searcher the page builds with the default settings: the default reranker (auto:
    maxsim on this profile, on the retriever's dense model) and the per-source cap."""
    settings = get_settings()
    reranker = build_reranker(settings, retriever.embedder)
    return Searcher(
        retriever,
        reranker,
        settings.rerank_candidates,
        per_source=settings.per_source,
        rerank_weight=settings.rerank_weight,
    )


def test_hybrid_search_without_llm_shows_the_hits_with_stage_ranks_and_why(
    start_app, ingested, retriever
):
    at = ask(start_app(*ingested[:2]), QUERY)

    settings = get_settings()
    expected = (
        app_searcher(retriever)
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
        stages, rerank = row["stages"].split(" · rerank ")  # the default reranker's mixed score
        assert stages == f"{dense} · {sparse}{section} · {fused} · score {hit.score:.4f}"
        assert float(rerank) == pytest.approx(hit.rerank_score, abs=RERANK_NOISE)
    assert any(hit.section_rank for hit in expected)
    (warning,) = at.warning
    assert rendered_text(warning.value) == f"No generated answer: {NO_LLM}"
    assert [m.name for m in at.main.chat_message] == ["user", "assistant"]
    assert_no_live_markup(at)


def test_a_question_on_an_empty_collection_says_why_nothing_is_shown(start_app, embedder, tmp_path):
    db = str(tmp_path / "empty.db")
    MilvusStore.open(db, "docs", CollectionProfile.of(embedder)).close()
    at = ask(start_app(db), QUERY)

    assert not at.exception
    assert [rendered_text(i.value) for i in at.info] == ["No passage matches this question."]
    warnings = [rendered_text(w.value) for w in at.warning]
    assert (
        "no hits: collection 'docs' holds no chunks yet (python -m ingest PATH adds documents)"
        in warnings
    )
    assert not any("Sparse-matched" in rendered_text(c.value) for c in at.main.caption)


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
    expected = app_searcher(retriever).search(QUERY, top_k=settings.top_k, mode=mode).hits
    assert_shows(at, expected)
    for hit, row in zip(expected, shown_hits(at), strict=True):
        # The app encodes the query itself: the last printed digit may differ by float noise.
        stage, scores = row["stages"].rsplit(" · score ", 1)
        score, rerank = scores.split(" · rerank ")  # the default reranker ordered them
        assert stage == f"{mode.value} #{hit.fused_rank}"
        assert float(score) == pytest.approx(hit.score, rel=1e-4, abs=1e-4)
        assert float(rerank) == pytest.approx(hit.rerank_score, abs=RERANK_NOISE)
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
