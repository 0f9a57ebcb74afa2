"""Streamlit chat page: cited, streamed answers over the ranked passages, with search controls."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from pydantic import ValidationError
from pymilvus import MilvusException

from rag.answer import LLM, Answer, AnswerStream, citation_spans, public_url
from rag.context import ContextBuilder
from rag.embedders import UnknownProfileError
from rag.http import APIError
from rag.rerankers import RERANKERS, Reranker, RerankError, build_reranker
from rag.retriever import Retriever
from rag.search import Searcher, SearchResult, term_pattern
from rag.settings import Fusion, SearchMode, Settings, get_settings
from rag.store import StoreError
from rag.types import Hit

_ASCII_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_BLANKS = re.compile(r"[^\S\n]+")  # whitespace runs other than newlines
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")  # a blank line


def literal(text: str) -> str:
    """``text`` as Markdown that renders literally, on one line.

    Every ASCII punctuation character is backslash-escaped, which CommonMark defines as the
    character itself: no HTML tag or entity, link, image, emphasis, code span, Streamlit
    directive (``:red[…]``, ``:material/…:``) or math can start, and whitespace runs become
    one space, so no block can form. (Streamlit's emoji plugin still shows an emoji
    shortcode such as ``:smile:`` as its emoji: cosmetic, never markup.)
    """
    return _ASCII_PUNCTUATION.sub(r"\\\1", " ".join(text.split()))


def inline_literal(text: str) -> str:
    """Like :func:`literal` but keeping line breaks (for streamed text, delta by delta):
    punctuation escaped, other whitespace runs made one space, so no block can start."""
    return _ASCII_PUNCTUATION.sub(r"\\\1", _BLANKS.sub(" ", text))


def highlight(markdown: str, terms: Iterable[str]) -> str:
    """``markdown`` (already escaped by :func:`literal`) with the words that match ``terms``
    (:func:`rag.search.term_pattern`) in bold."""
    pattern = term_pattern(terms)
    return pattern.sub(r"**\g<0>**", markdown) if pattern else markdown


def passage_markdown(text: str, terms: Iterable[str] = ()) -> str:
    """A passage as Markdown that shows its text literally, paragraphs and line breaks kept
    (leading indentation as no-break spaces, which start no code block), with ``terms``
    highlighted (see :func:`highlight`)."""
    terms = list(terms)
    paragraphs = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        lines = [
            "\u00a0" * (len(line) - len(line.lstrip())) + highlight(literal(line), terms)
            for line in paragraph.splitlines()
            if line.strip()
        ]
        paragraphs.append("  \n".join(lines))
    return "\n\n".join(p for p in paragraphs if p)


def anchor(turn: int, number: int) -> str:
    """The HTML id of passage ``number`` of chat turn ``turn``."""
    return f"t{turn}-passage-{number}"


def answer_markdown(text: str, ranks: list[int], turn: int) -> str:
    """The answer as literal Markdown whose citations of the prompt's passages are links to
    the hit each one names (``ranks[n - 1]``: ``[1]`` → ``#t0-passage-1`` when passage 1 is
    hit 1); a bracket naming no passage stays text."""
    parts, position = [], 0
    for start, end, numbers in citation_spans(text, len(ranks)):
        parts.append(inline_literal(text[position:start]))
        parts.append(" ".join(f"[\\[{n}\\]](#{anchor(turn, ranks[n - 1])})" for n in numbers))
        position = end
    parts.append(inline_literal(text[position:]))
    return "".join(parts)


def close_retriever(retriever: Retriever) -> None:
    """Close the retriever's Milvus client when Streamlit drops it from its cache (the
    menu's "Clear cache"), so a Milvus Lite db is released for another process."""
    retriever.store.close()


@st.cache_resource(
    show_spinner="Loading the models and opening the collection…",
    hash_funcs={Settings: Settings.model_dump_json},
    on_release=close_retriever,
)
def load_retriever(settings: Settings) -> Retriever:
    """The retriever (embedder, Milvus client, collection) of the settings, opened once per
    process and closed by :func:`close_retriever` when the cache is cleared."""
    return Retriever.from_settings(settings)


@st.cache_resource(
    show_spinner="Loading the reranker…", hash_funcs={Settings: Settings.model_dump_json}
)
def load_reranker(settings: Settings, name: str) -> Reranker | None:
    """The reranker ``name`` (``None`` for ``none``), loaded once per process."""
    embedder = load_retriever(settings).embedder
    return build_reranker(settings.model_copy(update={"reranker": name}), embedder)


@dataclass
class Turn:
    """One question of the chat and everything shown for it."""

    question: str
    answer: Answer
    mode: SearchMode
    passages: list[int]  # the hit rank of each passage given to the LLM
    terms: list[str]
    notes: list[str]
    elapsed_ms: float
    language: str  # the question's detected language (Language.describe)


def search_options(settings: Settings) -> dict:
    """The sidebar's search controls (defaults from the settings) as ``Retriever.search``
    arguments, plus ``reranker`` (a name) and ``use_llm``."""
    sidebar = st.sidebar
    sidebar.header("Search")
    modes = [mode.value for mode in SearchMode]
    mode = SearchMode(
        sidebar.radio("Mode", modes, modes.index(settings.mode), key="mode", horizontal=True)
    )
    options: dict = {"mode": mode}
    if mode is SearchMode.HYBRID:
        fusions = [fusion.value for fusion in Fusion]
        fusion = Fusion(
            sidebar.radio(
                "Fusion", fusions, fusions.index(settings.fusion), key="fusion", horizontal=True
            )
        )
        options["fusion"] = fusion
        if fusion is Fusion.RRF:
            options["rrf_k"] = sidebar.number_input("RRF k", 1, value=settings.rrf_k, key="rrf_k")
        else:
            top = max(1.0, *settings.weights)
            options["weights"] = (
                sidebar.slider(
                    "Dense weight", 0.0, top, settings.weights[0], 0.05, key="dense_weight"
                ),
                sidebar.slider(
                    "Sparse weight", 0.0, top, settings.weights[1], 0.05, key="sparse_weight"
                ),
            )
    names = list(RERANKERS)
    options["reranker"] = sidebar.selectbox(
        "Reranker",
        names,
        names.index(settings.reranker) if settings.reranker in names else 0,
        key="reranker",
        help="Reorders the retrieved passages; the model loads on first use. auto: MaxSim "
        "over the dense model's token vectors, mixed with the retrieval score, when the "
        "profile's dense model is a sentence-transformers model; else none.",
    )
    options["top_k"] = sidebar.slider(
        "Passages (top-k)", 1, max(50, settings.top_k), settings.top_k, key="top_k"
    )
    options["per_source"] = sidebar.number_input(
        "Passages per file (0: no cap)",
        0,
        value=settings.per_source,
        key="per_source",
        help="Most passages of one file among the results.",
    )
    options["source_prefix"] = (
        sidebar.text_input(
            "Source prefix (optional)",
            key="source_prefix",
            help="Only search files whose path starts with this text.",
        )
        or None
    )
    sidebar.header("Answer")
    options["use_llm"] = sidebar.toggle(
        "Generate a cited answer",
        value=bool(settings.llm_base_url),
        key="use_llm",
        disabled=not settings.llm_base_url,
    )
    if settings.llm_base_url:
        model = settings.llm_model or "the endpoint's first model"
        endpoint = public_url(settings.llm_base_url)  # never the credentials of a URL
        sidebar.caption(
            f"{literal(endpoint)} · {literal(model)} · the best "
            f"{settings.llm_passages} passages are given to it"
        )
    else:
        sidebar.caption(
            "No LLM is configured: set RAG\\_LLM\\_BASE\\_URL (see `python -m rag serve-llm`)."
        )
    return options


def show_stats(stats: dict) -> None:
    """The collection's profile, file count and chunk count, in the sidebar."""
    sidebar = st.sidebar
    sidebar.header("Collection")
    files, chunks = sidebar.columns(2)
    files.metric("Files", f"{stats['files']:,}")
    chunks.metric("Chunks", f"{stats['chunks']:,}")
    sidebar.caption(f"{literal(stats['collection'])} · {literal(stats['profile'] or 'no profile')}")


def stage_line(hit: Hit, mode: SearchMode) -> str:
    """A hit's rank in each searched list, its retrieval score and its rerank score:
    ``dense #3 · sparse #1 · section #2 · fused #2 · score 0.0320 · rerank 0.8731`` (the
    section stage when the hit's section ranked among the section rows)."""
    retrieved = hit.fused_rank or hit.rank
    if mode is SearchMode.HYBRID:
        stages = [
            f"{stage} #{rank}" if rank else f"{stage} –"
            for stage, rank in (("dense", hit.dense_rank), ("sparse", hit.sparse_rank))
        ]
        if hit.section_rank is not None:
            stages.append(f"section #{hit.section_rank}")
        parts = [*stages, f"fused #{retrieved}", f"score {hit.score:.4f}"]
    else:
        parts = [f"{mode.value} #{retrieved}", f"score {hit.score:.4f}"]
    if hit.rerank_score is not None:
        parts.append(f"rerank {hit.rerank_score:.4f}")
    return " · ".join(parts)


def show_hit(hit: Hit, mode: SearchMode, turn: int, terms: list[str]) -> None:
    """One passage: ``[n]`` and title (the citations' anchor), stage ranks and scores,
    source, heading and page, then the text with the sparse-matched terms in bold.

    Every document string is shown literally (:func:`literal`, :func:`passage_markdown`).
    """
    with st.container(border=True, key=anchor(turn, hit.rank)):
        st.subheader(f"\\[{hit.rank}\\] {literal(hit.title)}", anchor=anchor(turn, hit.rank))
        st.caption(stage_line(hit, mode))
        where = [literal(Path(hit.source).name), literal(hit.source)]
        if hit.heading:
            where.append(literal(hit.heading))
        if hit.page > 0:
            where.append(f"page {hit.page}")
        st.caption(" · ".join(where))
        st.markdown(passage_markdown(hit.text, terms))


def show_turn(index: int, turn: Turn) -> None:
    """A finished chat turn: the question, the answer with linked citations, the passages."""
    with st.chat_message("user"):
        st.markdown(literal(turn.question))
    with st.chat_message("assistant"):
        if turn.answer.text:
            st.markdown(answer_markdown(turn.answer.text, turn.passages, index))
        show_details(index, turn)


def show_details(index: int, turn: Turn) -> None:
    """Under an answer: why it is missing, notes, then the ranked passages."""
    if turn.answer.error:
        st.warning(f"No generated answer: {literal(turn.answer.error)}")
    for note in turn.notes:
        st.warning(literal(note))
    hits = turn.answer.hits
    cited = ", ".join(f"[{n}]" for n in turn.answer.citations) or "none"
    st.caption(
        f"{len(hits)} passages · {turn.mode.value} search · "
        f"question language: {literal(turn.language)} · {turn.elapsed_ms:.0f} ms · "
        f"cited: {literal(cited)}"
    )
    if not hits:
        st.info("No passage matches this question.")
    elif turn.terms:
        st.caption("Sparse-matched terms in bold: " + literal(", ".join(turn.terms)))
    for hit in hits:
        show_hit(hit, turn.mode, index, turn.terms)


def escaped(deltas: Iterator[str]) -> Iterator[str]:
    """The answer's deltas as literal Markdown, for ``st.write_stream``."""
    for delta in deltas:
        yield inline_literal(delta)


def retrieve(
    retriever: Retriever, settings: Settings, question: str, options: dict
) -> tuple[Searcher, SearchResult, list[str]]:
    """The searcher of the chosen reranker, its result for ``question`` and the notes for the
    user (:meth:`rag.search.Searcher.search`). A reranker that cannot load leaves the
    retrieved order, with a note.

    Raises:
        ValueError: empty query or invalid fusion parameters.
    """
    search = {k: v for k, v in options.items() if k not in ("reranker", "use_llm", "per_source")}
    notes = []
    try:
        reranker = load_reranker(settings, options["reranker"])
    except (OSError, RerankError, ValueError) as error:
        reranker = None
        notes.append(f"reranker {options['reranker']} unavailable, retrieved order kept: {error}")
    searcher = Searcher(
        retriever,
        reranker,
        settings.rerank_candidates,
        per_source=options["per_source"],
        rerank_weight=settings.rerank_weight,
    )
    result = searcher.search(question, **search)
    return searcher, result, notes + result.notes


def ask(
    retriever: Retriever, settings: Settings, question: str, options: dict, index: int
) -> Turn | None:
    """Answer ``question`` in the page (streamed), returning the finished turn (``None``
    after an error shown to the user: an invalid query or fusion setting, or an unusable
    collection)."""
    with st.chat_message("user"):
        st.markdown(literal(question))
    with st.chat_message("assistant"):
        started = time.perf_counter()
        try:
            with st.spinner("Searching…"):
                searcher, result, notes = retrieve(retriever, settings, question, options)
        except (ValueError, StoreError) as error:
            st.error(literal(str(error)))
            return None
        elapsed_ms = (time.perf_counter() - started) * 1000
        llm = LLM.from_settings(settings) if options["use_llm"] else None
        context = ContextBuilder.of(retriever, settings.context_tokens)
        stream = AnswerStream(question, result.hits, llm, settings.llm_passages, context)
        placeholder = st.empty()
        with placeholder.container():
            st.write_stream(escaped(iter(stream)))
        answer = stream.answer
        if llm is None and settings.llm_base_url:
            answer.error = "answer generation is switched off in the sidebar"
        ranks = [hit.rank for hit in stream.prompt_hits]
        if answer.text:
            placeholder.markdown(answer_markdown(answer.text, ranks, index))
        else:
            placeholder.empty()
        terms = searcher.matched_terms(question, result.mode)
        turn = Turn(
            question,
            answer,
            result.mode,
            ranks,
            terms,
            notes,
            elapsed_ms,
            result.language.describe(),
        )
        show_details(index, turn)
    return turn


def main() -> None:
    """Build the page for one run of the script."""
    st.set_page_config(page_title="Ask the docs", page_icon="🔎", layout="wide")
    st.title("Ask the docs")
    try:
        settings = get_settings()
        retriever = load_retriever(settings)
    except (ValidationError, UnknownProfileError, OSError, StoreError, APIError) as error:
        st.error(str(error))
        st.stop()
    try:
        chat(retriever, settings)
    except MilvusException as error:  # e.g. the db server was stopped: said, no traceback
        st.error(
            literal(
                f"Milvus at {settings.milvus_uri} failed: {error.message}. Check that "
                "it runs (python -m rag serve-db serves a Milvus Lite db), then reload "
                "the page."
            )
        )


def chat(retriever: Retriever, settings: Settings) -> None:
    """The sidebar, the chat so far and the answer to a new question.

    Raises:
        MilvusException: Milvus failed (a server that stopped answering).
    """
    options = search_options(settings)
    show_stats(retriever.store.stats())

    turns: list[Turn] = st.session_state.setdefault("turns", [])
    for index, turn in enumerate(turns):
        show_turn(index, turn)
    question = st.chat_input("Ask a question about the documents", key="question")
    if question is None or not question.strip():
        if not turns:
            st.caption("Ask a question: the answer cites the ranked passages shown under it.")
        return
    turn = ask(retriever, settings, question, options, len(turns))
    if turn is not None:
        turns.append(turn)


if __name__ == "__main__":  # streamlit run / AppTest; importing only defines
    main()
