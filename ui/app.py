"""Streamlit search page: a query box, ranked passages with per-stage ranks, collection stats."""

from __future__ import annotations

import re
import time
from pathlib import Path

import streamlit as st
from pydantic import ValidationError

from rag.embedders import UnknownProfileError, build_embedder
from rag.embedders.base import Embedder
from rag.retriever import Retriever
from rag.settings import Fusion, SearchMode, Settings, get_settings
from rag.store import StoreError
from rag.types import Hit

# The settings build_embedder reads: the models are reloaded only when one of them changes.
MODEL_FIELDS = {
    "profile", "dense_model", "sparse_model", "bge_m3_model",
    "max_length", "device", "batch_size", "num_threads",
}
_ASCII_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def _model_key(settings: Settings) -> str:
    return settings.model_dump_json(include=MODEL_FIELDS)


@st.cache_resource(show_spinner="Loading the embedding models…", hash_funcs={Settings: _model_key})
def load_embedder(settings: Settings) -> Embedder:
    """The embedder of the settings' profile, loaded once per process."""
    return build_embedder(settings)


@st.cache_resource(
    show_spinner="Opening the collection…", hash_funcs={Settings: Settings.model_dump_json}
)
def load_retriever(settings: Settings) -> Retriever:
    """The retriever (Milvus client and collection) of the settings, opened once per process."""
    return Retriever.from_settings(settings, load_embedder(settings))


def literal(text: str) -> str:
    """``text`` as Markdown that renders literally, on one line.

    Every ASCII punctuation character is backslash-escaped, which CommonMark defines as the
    character itself: no HTML tag or entity, link, image, emphasis, code span, Streamlit
    directive (``:red[…]``, ``:material/…:``) or math can start, and whitespace runs become
    one space, so no block can form. (Streamlit's emoji plugin still shows an emoji
    shortcode such as ``:smile:`` as its emoji: cosmetic, never markup.)
    """
    return _ASCII_PUNCTUATION.sub(r"\\\1", " ".join(text.split()))


def search_options(settings: Settings) -> dict:
    """The sidebar controls (defaults from the settings) as ``Retriever.search`` arguments."""
    sidebar = st.sidebar
    sidebar.header("Search")
    top_k = sidebar.slider("Results (top-k)", 1, max(50, settings.top_k), settings.top_k,
                           key="top_k")
    modes = [mode.value for mode in SearchMode]
    mode = SearchMode(sidebar.radio("Mode", modes, modes.index(settings.mode), key="mode",
                                    horizontal=True))
    options = {"top_k": top_k, "mode": mode}
    if mode is SearchMode.HYBRID:
        fusions = [fusion.value for fusion in Fusion]
        fusion = Fusion(sidebar.radio("Fusion", fusions, fusions.index(settings.fusion),
                                      key="fusion", horizontal=True))
        options["fusion"] = fusion
        if fusion is Fusion.RRF:
            options["rrf_k"] = sidebar.number_input("RRF k", 1, value=settings.rrf_k,
                                                    key="rrf_k")
        else:
            top = max(1.0, *settings.weights)
            options["weights"] = (
                sidebar.slider("Dense weight", 0.0, top, settings.weights[0], 0.05,
                               key="dense_weight"),
                sidebar.slider("Sparse weight", 0.0, top, settings.weights[1], 0.05,
                               key="sparse_weight"),
            )
    options["source_prefix"] = sidebar.text_input(
        "Source prefix (optional)", key="source_prefix",
        help="Only search files whose path starts with this text.",
    ) or None
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
    """A hit's rank in each searched list and its final score: ``dense #3 · sparse #1 · …``."""
    if mode is not SearchMode.HYBRID:
        return f"{mode.value} #{hit.rank} · score {hit.score:.4f}"
    stages = [
        f"{stage} #{rank}" if rank else f"{stage} –"
        for stage, rank in (("dense", hit.dense_rank), ("sparse", hit.sparse_rank))
    ]
    return " · ".join([*stages, f"fused score {hit.score:.4f}"])


def show_hit(hit: Hit, mode: SearchMode) -> None:
    """One hit: rank and title, stage ranks and score, source, heading, page, then the passage.

    Every document string is shown literally: the passage with ``st.text`` (no Markdown, no
    HTML), the title, path and heading as :func:`literal` Markdown.
    """
    with st.container(border=True):
        st.markdown(f"**{hit.rank}\\. {literal(hit.title)}**")
        st.caption(stage_line(hit, mode))
        where = [literal(Path(hit.source).name), literal(hit.source)]
        if hit.heading:
            where.append(literal(hit.heading))
        if hit.page > 0:
            where.append(f"page {hit.page}")
        st.caption(" · ".join(where))
        st.text(hit.text, width="stretch")


def main() -> None:
    """Build the page for one run of the script."""
    st.set_page_config(page_title="Hybrid search", page_icon="🔎", layout="wide")
    st.title("Hybrid search")
    try:
        settings = get_settings()
        retriever = load_retriever(settings)
    except (ValidationError, UnknownProfileError, OSError, StoreError) as error:
        st.error(str(error))
        st.stop()
    options = search_options(settings)
    show_stats(retriever.store.stats())

    query = st.text_input("Query", key="query", placeholder="How do I create a sparse index?")
    if not query.strip():
        st.caption("Type a question and press Enter to search the ingested documents.")
        return
    started = time.perf_counter()
    try:
        hits = retriever.search(query, **options)
    except ValueError as error:
        st.error(str(error))
        return
    elapsed_ms = (time.perf_counter() - started) * 1000
    st.caption(f"{len(hits)} results · {options['mode'].value} search · {elapsed_ms:.0f} ms")
    if not hits:
        st.info("No passage matches this query.")
    for hit in hits:
        show_hit(hit, options["mode"])


if __name__ == "__main__":  # streamlit run / AppTest; importing only defines
    main()
