"""Small-to-big context (rag.context) on a real Milvus Lite collection of two real Milvus
docs pages with long sections, and the store's reads by chunk index."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from conftest import MILVUS_DOCS_EN, ingest_folder

from rag.answer import AnswerStream, build_messages, extract_citations
from rag.chunking import HEADING_SEPARATOR
from rag.context import ContextBuilder, Passage, build_passages, join_chunks, overlap_length
from rag.eval.context_recall import ContextRecall, context_recall, ranked
from rag.loaders import load_document
from rag.search import spread_per_source
from rag.store import CollectionProfile, MilvusStore
from rag.types import Chunk, Hit

PAGES = [
    MILVUS_DOCS_EN / "userGuide/collections/manage-partitions.md",  # sections of 5-8 chunks
    MILVUS_DOCS_EN / "userGuide/indexes/sparse/sparse-inverted-index.md",
]


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def store(tmp_path_factory, settings, embedder):
    """The two pages ingested (200-token chunks, 32 overlap), the store open for the module."""
    folder = tmp_path_factory.mktemp("context_docs")
    for page in PAGES:
        (folder / page.name).symlink_to(page)
    uri = str(tmp_path_factory.mktemp("context_db") / "milvus.db")
    report = ingest_folder(uri, settings, embedder, folder)
    assert report.chunks_written > 30 and not report.failed
    opened = MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def chunks(store) -> list[Chunk]:
    return sorted(store.all_chunks(), key=lambda c: (c.source, c.chunk_index))


@pytest.fixture(scope="module")
def sections(chunks) -> dict[tuple[str, str], list[Chunk]]:
    """Chunks by (source, heading), each list in index order; the longest sections first."""
    by_section: dict[tuple[str, str], list[Chunk]] = defaultdict(list)
    for chunk in chunks:
        by_section[(chunk.source, chunk.heading)].append(chunk)
    return dict(sorted(by_section.items(), key=lambda item: -len(item[1])))


def hit(chunk: Chunk, rank: int = 1) -> Hit:
    return Hit(
        rank,
        1.0 / rank,
        chunk.chunk_id,
        chunk.source,
        chunk.title,
        chunk.heading,
        chunk.page,
        chunk.text,
        chunk.chunk_index,
    )


def section_text(source: str, heading: str) -> str:
    """The section's text as the loader read it from the original page."""
    (section,) = [
        s
        for s in load_document(Path(source)).sections
        if HEADING_SEPARATOR.join(s.heading) == heading
    ]
    return section.text


def tokens(embedder, text: str) -> int:
    return len(embedder.tokenizer.token_spans(text))


def assert_one_section(store, passage: Passage) -> None:
    """Every chunk the passage spans is stored under its source, heading and page."""
    stored = store.chunks_at(passage.source, range(passage.first_index, passage.last_index + 1))
    assert [c.chunk_index for c in stored] == list(
        range(passage.first_index, passage.last_index + 1)
    )
    assert {(c.source, c.heading, c.page) for c in stored} == {
        (passage.source, passage.heading, passage.page)
    }


# ---------------------------------------------------------------- the store
def test_chunks_at_reads_one_source_by_index(store, chunks):
    source = chunks[0].source
    mine = [c for c in chunks if c.source == source]
    got = store.chunks_at(source, [5, 3, 3, 4, 10_000, -1])
    assert [c.chunk_index for c in got] == [3, 4, 5]
    assert {c.source for c in got} == {source}
    assert [c.text for c in got] == [c.text for c in mine[3:6]]
    assert store.chunks_at(source, []) == [] and store.chunks_at("no/such.md", [0]) == []
    many = store.chunks_at(source, range(0, 1_000))  # more indexes than one batch holds
    assert [c.chunk_id for c in many] == [c.chunk_id for c in mine]


# ---------------------------------------------------------------- expansion
def test_a_hit_grows_into_its_whole_section_in_order(store, embedder, sections):
    (source, heading), section = next(iter(sections.items()))
    assert len(section) >= 6
    middle = section[len(section) // 2]

    (passage,) = build_passages([hit(middle)], store.chunks_at, embedder.tokenizer, 100_000)

    assert (passage.first_index, passage.last_index) == (
        section[0].chunk_index,
        section[-1].chunk_index,
    )
    assert flat(passage.text) == flat(section_text(source, heading))  # overlaps kept once
    assert passage.hit.chunk_id == middle.chunk_id and passage.hits == (passage.hit,)
    assert (passage.source, passage.heading, passage.title) == (source, heading, middle.title)
    assert passage.tokens == tokens(embedder, passage.text)


@pytest.mark.parametrize("budget", [400, 700, 1000])
def test_growth_stays_within_the_budget_and_is_a_run_of_the_section(
    store, embedder, sections, budget
):
    (source, heading), section = next(iter(sections.items()))
    middle = section[len(section) // 2]
    whole = flat(section_text(source, heading))

    (passage,) = build_passages([hit(middle)], store.chunks_at, embedder.tokenizer, budget)

    assert passage.tokens == tokens(embedder, passage.text) <= budget
    assert passage.first_index <= middle.chunk_index <= passage.last_index
    assert flat(middle.text) in flat(passage.text) and flat(passage.text) in whole
    assert passage.chunks > 1  # a neighbour fitted
    # one more chunk on either side would not have fitted
    by_index = {c.chunk_index: c for c in section}
    first, last = by_index[passage.first_index], by_index[passage.last_index]
    if before := by_index.get(passage.first_index - 1):
        text = join_chunks(before.text, passage.text, before.text, first.text)
        assert tokens(embedder, text) > budget
    if after := by_index.get(passage.last_index + 1):
        text = join_chunks(passage.text, after.text, last.text, after.text)
        assert tokens(embedder, text) > budget


def test_passages_grow_round_robin_in_rank_order(store, embedder, sections):
    (first_section, second_section) = list(sections.values())[:2]
    a, b = first_section[2], second_section[2]  # both have neighbours on each side
    seeds = [hit(a, 1), hit(b, 2)]
    after = [
        join_chunks(c.text, n.text, c.text, n.text)
        for c, n in ((a, first_section[3]), (b, second_section[3]))
    ]
    budget = sum(tokens(embedder, text) for text in after) + 10

    # room for the next chunk after each, and not for another: both grow by it
    passages = build_passages(seeds, store.chunks_at, embedder.tokenizer, budget)

    assert [p.hit.chunk_id for p in passages] == [a.chunk_id, b.chunk_id]
    assert [(p.first_index, p.last_index) for p in passages] == [
        (a.chunk_index, a.chunk_index + 1),
        (b.chunk_index, b.chunk_index + 1),
    ]
    assert [p.text for p in passages] == after
    # a chunk more: the best passage grows first, by the chunk before it
    before = join_chunks(first_section[1].text, after[0], first_section[1].text, a.text)
    more = tokens(embedder, before) + tokens(embedder, after[1]) + 10
    passages = build_passages(seeds, store.chunks_at, embedder.tokenizer, more)
    assert [(p.first_index, p.last_index) for p in passages] == [
        (a.chunk_index - 1, a.chunk_index + 1),
        (b.chunk_index, b.chunk_index + 1),
    ]


def test_expansion_never_crosses_sources_or_sections(store, embedder, chunks, sections):
    # the last chunk of every section and the first of every page: their neighbours across a
    # boundary belong to another section or do not exist
    edges = [s[-1] for s in sections.values()] + [c for c in chunks if c.chunk_index == 0]
    seeds = [hit(chunk, rank) for rank, chunk in enumerate(edges, 1)]
    for budget in (1_500, 4_000, 20_000):
        passages = build_passages(seeds, store.chunks_at, embedder.tokenizer, budget)
        assert sum(p.tokens for p in passages) <= budget
        for passage in passages:
            assert_one_section(store, passage)
            whole = flat(section_text(passage.source, passage.heading))
            assert flat(passage.text) in whole


def test_touching_and_repeated_hits_of_a_section_share_one_passage(store, embedder, sections):
    (source, heading), section = next(iter(sections.items()))
    other = list(sections.values())[1][0]
    first, second, fourth = section[0], section[1], section[3]
    seeds = [hit(second, 1), hit(other, 2), hit(first, 3), hit(second, 4), hit(fourth, 5)]
    builder = ContextBuilder(store.chunks_at, embedder.tokenizer, 100_000)

    plain = builder.build(seeds, expand=False)
    grown = builder.build(seeds)

    # plain: hits 1, 3 and 4 touch (indexes 0, 1, 1); hit 5 (index 3) stands apart
    assert [[h.rank for h in p.hits] for p in plain] == [[1, 3, 4], [2], [5]]
    assert (plain[0].first_index, plain[0].last_index) == (first.chunk_index, second.chunk_index)
    assert flat(plain[0].text) == flat(
        join_chunks(first.text, second.text, first.text, second.text)
    )
    assert flat(plain[0].text) in flat(section_text(source, heading))
    # expanded: the passage of hit 1 grows into hit 5's, which joins it; the whole section
    assert [[h.rank for h in p.hits] for p in grown] == [[1, 3, 4, 5], [2]]
    assert (grown[0].first_index, grown[0].last_index) == (
        section[0].chunk_index,
        section[-1].chunk_index,
    )
    assert flat(grown[0].text) == flat(section_text(source, heading))
    assert grown[0].hit.rank == 1 and grown[1].hit.chunk_id == other.chunk_id


def test_budget_zero_gives_the_bare_hits(store, embedder, sections):
    section = next(iter(sections.values()))
    seeds = [hit(section[0], 1), hit(section[1], 2), hit(section[1], 3)]
    passages = build_passages(seeds, store.chunks_at, embedder.tokenizer, 0)
    assert [p.hit for p in passages] == seeds and [p.text for p in passages] == [
        h.text for h in seeds
    ]
    assert all(p.first_index == p.last_index == p.hit.chunk_index for p in passages)
    assert build_passages(seeds, None, None, 0) == passages  # nothing is read nor counted


def test_a_first_hit_longer_than_the_budget_is_cut(store, embedder, sections):
    section = next(iter(sections.values()))
    seeds = [hit(section[1], 1), hit(section[4], 2)]
    (passage,) = build_passages(seeds, store.chunks_at, embedder.tokenizer, 50)
    assert passage.tokens <= 50 and section[1].text.startswith(passage.text)
    assert passage.first_index == passage.last_index == section[1].chunk_index


def test_plain_context_is_the_hits_in_rank_order_until_the_budget(store, embedder, chunks):
    seeds = [hit(c, rank) for rank, c in enumerate(chunks[::3][:8], 1)]  # no two touch
    sizes = [tokens(embedder, h.text) for h in seeds]
    budget = sum(sizes[:5]) + sizes[5] - 1  # the sixth does not fit

    passages = build_passages(seeds, store.chunks_at, embedder.tokenizer, budget, expand=False)

    assert [p.hit for p in passages] == seeds[:5]
    assert [p.text for p in passages] == [h.text for h in seeds[:5]]


def test_overlap_is_found_only_at_a_word_start():
    assert overlap_length("alpha beta gamma", "beta gamma delta") == len("beta gamma")
    assert overlap_length("alpha beta gamma", "gamma delta") == len("gamma")
    assert overlap_length("alphabet", "bet more") == 0  # inside a word: not an overlap
    assert overlap_length("one two", "three") == 0
    assert join_chunks("a b c", "b c d", "a b c", "b c d") == "a b c d"
    assert join_chunks("a b", "c d", "a b", "c d") == "a b\n\nc d"


# ---------------------------------------------------------------- the prompt
def test_the_prompt_holds_the_expanded_passages_and_citations_name_their_hits(
    store, embedder, sections
):
    (source, heading), section = next(iter(sections.items()))
    other = list(sections.values())[1][2]
    hits = [hit(section[2], 1), hit(section[3], 2), hit(other, 3), hit(section[0], 4)]
    builder = ContextBuilder(store.chunks_at, embedder.tokenizer, 2_000)

    stream = AnswerStream("How do I drop a partition?", hits, None, passages=3, context=builder)

    passages = stream.prompt_passages
    assert [[h.rank for h in p.hits] for p in passages] == [[1, 2], [3]]  # hit 4: not seeded
    assert sum(p.tokens for p in passages) <= 2_000 and passages[0].chunks > 2
    assert stream.messages() == build_messages(stream.question, passages)
    user = stream.messages()[-1]["content"]
    assert user.count("<passage") == 2 and flat(passages[0].text) in user
    assert stream.prompt_hits == [hits[0], hits[2]]
    citations = extract_citations("It is [2], see [1].", passages)
    assert citations[2].chunk_id == other.chunk_id and citations[2].source == other.source
    assert (citations[1].first_index, citations[1].last_index) == (
        passages[0].first_index,
        passages[0].last_index,
    )
    # RAG_CONTEXT_TOKENS=0 and no builder: the bare hits, as before expansion
    for bare in (
        AnswerStream("q", hits, None, 3),
        AnswerStream("q", hits, None, 3, ContextBuilder(store.chunks_at, embedder.tokenizer, 0)),
    ):
        assert [p.text for p in bare.prompt_passages] == [h.text for h in hits[:3]]
        assert bare.messages() == build_messages("q", hits[:3])


# ---------------------------------------------------------------- context recall (rag.eval)
def test_context_recall_counts_a_relevant_source_in_the_context(store, embedder, sections):
    (page, _), long_section = next(iter(sections.items()))
    other = next(c for (source, _), cs in sections.items() if source != page for c in cs)
    crowd = [hit(c, rank) for rank, c in enumerate(long_section[:6], 1)]
    # q1: six chunks of the page, then the other page (7th); q2: no hits; q3: other page first
    final = {"q1": [*crowd, hit(other, 7)], "q2": [], "q3": [hit(other, 1), *crowd[1:]]}
    qrels = {"q1": {other.source: 1}, "q2": {other.source: 1}, "q3": {page: 1, "x": 0}}
    six = sum(tokens(embedder, h.text) for h in crowd)

    rows = context_recall(
        final,
        qrels,
        store.chunks_at,
        embedder.tokenizer,
        [six + 400, 100_000],
        seeds=2,
        hit_lists={"top-k": ranked, "capped": lambda h: spread_per_source(h, 1)},
        count=lambda source: store.count_chunks(source=source),
    )

    by = {(r.hits, r.budget): (r.plain, r.expanded) for r in rows}
    whole = {(r.hits, r.budget): (r.plain_whole, r.expanded_whole) for r in rows}
    assert [r.label for r in rows] == [
        "context-recall@" + str(six + 400),
        "context-recall@100000",
    ] * 2
    # top-k: q1's other page is the 7th hit, in the plain context; q3's page is a seed's
    assert by[("top-k", six + 400)] == (2 / 3, 1 / 3)
    assert by[("top-k", 100_000)] == (2 / 3, 1 / 3)
    # one chunk per page: q1's other page becomes the second hit, a seed
    assert by[("capped", six + 400)] == (2 / 3, 2 / 3)
    # a page of several sections is never whole (a passage ends with its section) …
    assert whole[("top-k", six + 400)] == (0.0, 0.0)
    assert whole[("top-k", 100_000)] == (0.0, 0.0)
    # … but a document of one section is (as a BEIR document is): count only the sections
    in_section = {
        page: len(long_section),
        other.source: len(sections[(other.source, other.heading)]),
    }
    rows = context_recall(
        final,
        qrels,
        store.chunks_at,
        embedder.tokenizer,
        [100_000],
        seeds=2,
        count=in_section.__getitem__,
    )
    # q3: the plain hits hold 5 of the section's 8 chunks, expansion all of them
    plain_q1 = 1 / 3 if in_section[other.source] == 1 else 0.0
    assert (rows[0].plain_whole, rows[0].expanded_whole) == (plain_q1, 1 / 3)
    assert context_recall(final, qrels, store.chunks_at, embedder.tokenizer, [10])[0] == (
        ContextRecall("top-k", 10, 0.0, 0.0, 5, 3)
    )
    with pytest.raises(ValueError):
        context_recall(final, qrels, store.chunks_at, embedder.tokenizer, [0])
