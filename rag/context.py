"""Small-to-big context: ranked hits → passages for the LLM, each hit with its neighbours in
the same section, up to a token budget."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rag.embedders.base import TokenCounter
from rag.types import Chunk, Hit

if TYPE_CHECKING:
    from rag.retriever import Retriever

ChunkReader = Callable[[str, Sequence[int]], Sequence[Chunk]]
"""``(source, chunk indexes) → the stored chunks of that source at those indexes`` (in any
order; an index with no chunk is left out): :meth:`rag.store.MilvusStore.chunks_at`."""

# Two joined chunks whose texts share no overlap (chunk_overlap 0) are separated by this.
GAP = "\n\n"
_AFTER, _BEFORE = 1, -1


@dataclass(frozen=True)
class Passage:
    """One passage of the LLM's context: a run of consecutive chunks of one section.

    Attributes:
        hit: the best-ranked hit inside it (its citation: ``[n]`` of the prompt names it).
        hits: every hit merged into it, best first (``hits[0] is hit``).
        source, title, heading, page: the section's (``page`` 0 without pages).
        first_index, last_index: the chunk index range, both ends included.
        text: the chunks' text in document order, each overlap with the chunk before kept
            once (the section's own text from the first chunk to the last).
        tokens: tokens of ``text`` by the builder's counter (0 when not counted: budget 0).
    """

    hit: Hit
    hits: tuple[Hit, ...]
    source: str
    title: str
    heading: str
    page: int
    first_index: int
    last_index: int
    text: str
    tokens: int = 0

    @classmethod
    def bare(cls, hit: Hit, text: str | None = None, tokens: int = 0) -> Passage:
        """``hit`` alone as a passage (its own text, or ``text``: a cut of it)."""
        return cls(
            hit,
            (hit,),
            hit.source,
            hit.title,
            hit.heading,
            hit.page,
            hit.chunk_index,
            hit.chunk_index,
            hit.text if text is None else text,
            tokens,
        )

    @property
    def chunks(self) -> int:
        """How many chunks it spans."""
        return self.last_index - self.first_index + 1


def build_passages(
    hits: Sequence[Hit],
    read: ChunkReader | None,
    counter: TokenCounter | None,
    budget: int,
    *,
    expand: bool = True,
) -> list[Passage]:
    """The passages the LLM gets for ``hits``: small-to-big, within ``budget`` tokens.

    Every hit, in rank order, becomes a passage while its tokens fit what is left of the
    budget (the first that does not fit ends the list); a hit of the same section that
    touches or repeats a passage's chunks (adjacent ``chunk_index``) joins that passage.
    With ``expand``, the passages then grow round-robin in rank order, one chunk per passage
    per round, alternating the next chunk after and the one before, until no neighbour fits
    the budget or none is left. A neighbour is a chunk of the same section: the same
    ``source``, ``heading`` and ``page``, and the same file version as the hit (a file being
    switched holds two). A passage that grows into another joins it (the better-ranked
    hit names the result). Joined chunks lose their overlap (``chunk_overlap`` tokens), so
    a passage's text is the section's text in order. Passages never cross a source.

    The whole context (the sum of ``Passage.tokens``) never exceeds ``budget``: when the
    best hit alone is longer, the first passage is that hit's text cut to ``budget`` tokens
    and is the only one. Tokens are the embedder's (``counter``), counted on the passage
    texts only: an LLM's tokenizer counts differently, and the prompt's markup comes on top.

    Args:
        hits: ranked hits, best first (already cut per source, if wanted); each one that
            fits seeds a passage, so pass ``hits[:llm_passages]`` for the product's prompt.
        read: reads stored chunks by source and index (``MilvusStore.chunks_at``); unused
            without ``expand``.
        counter: the embedder's tokenizer (``embedder.tokenizer``), as chunking counts.
        budget: tokens for all passages together; 0: every hit bare, uncounted and
            unmerged (``Passage.bare``), as the prompt had before expansion.
        expand: add neighbours (small-to-big); ``False``: the hits alone until the budget
            (the plain top-k context).

    Returns:
        The passages, ordered by the rank of their best hit.

    Raises:
        ValueError: ``budget`` is negative, or ``counter`` (or with ``expand``, ``read``)
            is missing for a budget above 0.
        Whatever ``read`` raises (``MilvusException`` from the store).

    Example::

        builder = ContextBuilder(store.chunks_at, embedder.tokenizer, budget=2000)
        for number, passage in enumerate(builder.build(hits[:5]), 1):
            print(number, passage.source, passage.first_index, passage.last_index)
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0 tokens, got {budget}")
    if budget == 0:
        return [Passage.bare(hit) for hit in hits]
    if counter is None or (expand and read is None):
        raise ValueError("a token counter (and a chunk reader, to expand) is needed")
    context = _Context(counter, budget, _Cache(read) if expand else None)
    context.seed(hits)
    if expand:
        context.expand()
    return [grown.passage() for grown in context.passages]


class ContextBuilder:
    """The settings of small-to-big context, for :class:`rag.answer.AnswerStream`.

    Args:
        read: ``MilvusStore.chunks_at`` (or any :data:`ChunkReader`).
        counter: the embedder's tokenizer (``embedder.tokenizer``).
        budget: tokens of context (``RAG_CONTEXT_TOKENS``); 0: the bare hits.

    Raises:
        ValueError: a negative ``budget``.
    """

    def __init__(self, read: ChunkReader, counter: TokenCounter, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"budget must be >= 0 tokens, got {budget}")
        self.read = read
        self.counter = counter
        self.budget = budget

    @classmethod
    def of(cls, retriever: Retriever, budget: int) -> ContextBuilder:
        """Chunks read from ``retriever.store``, tokens counted by the retriever's embedder
        (``budget``: ``RAG_CONTEXT_TOKENS``)."""
        return cls(retriever.store.chunks_at, retriever.embedder.tokenizer, budget)

    def build(self, hits: Sequence[Hit], *, expand: bool = True) -> list[Passage]:
        """:func:`build_passages` of ``hits`` with these settings."""
        return build_passages(hits, self.read, self.counter, self.budget, expand=expand)


def overlap_length(left: str, right: str) -> int:
    """Characters that ``right`` (a chunk) repeats from the end of ``left`` (the chunk
    before it): the longest end of ``left`` that starts a word (it follows a character no
    token covers: whitespace) and that ``right`` starts with, shorter than both; 0 if none.
    """
    for length in range(min(len(left), len(right)) - 1, 0, -1):
        before = left[-length - 1]
        if (before.isspace() or not before.isprintable()) and left.endswith(right[:length]):
            return length
    return 0


def join_chunks(left: str, right: str, left_last: str, right_first: str) -> str:
    """``left`` then ``right`` (two runs of chunks of one section, ``left`` ending with the
    chunk ``left_last`` and ``right`` starting with the next one, ``right_first``), their
    overlap kept once; :data:`GAP` between them when they share none."""
    length = overlap_length(left_last, right_first)
    return left + right[length:] if length else left + GAP + right


@dataclass
class _Grown:
    """A passage being built (mutable)."""

    hits: list[Hit]
    version: str | None  # the hit's file_hash; None: unknown (not expanded)
    first: int
    last: int
    text: str
    first_text: str  # the first chunk's text (for overlap with a chunk before)
    last_text: str  # the last chunk's text (for overlap with a chunk after)
    tokens: int
    open: dict[int, bool] = field(default_factory=lambda: {_AFTER: True, _BEFORE: True})
    turn: int = _AFTER

    @property
    def hit(self) -> Hit:
        return self.hits[0]

    def section(self) -> tuple[str, str, int]:
        return self.hit.source, self.hit.heading, self.hit.page

    def touches(self, index: int) -> bool:
        return self.first - 1 <= index <= self.last + 1

    def next_side(self) -> int | None:
        """The side to grow on this turn (alternating after / before), ``None`` if none."""
        for side in (self.turn, -self.turn):
            if self.open[side]:
                return side
        return None

    def passage(self) -> Passage:
        hit = self.hit
        return Passage(
            hit,
            tuple(self.hits),
            hit.source,
            hit.title,
            hit.heading,
            hit.page,
            self.first,
            self.last,
            self.text,
            self.tokens,
        )


class _Cache:
    """Chunks read so far, by source and index (every stored version), and which indexes
    were asked for (an index asked for and absent has no chunk)."""

    def __init__(self, read: ChunkReader) -> None:
        self.read = read
        self.asked: dict[str, set[int]] = defaultdict(set)
        self.chunks: dict[str, dict[int, list[Chunk]]] = defaultdict(dict)

    def fetch(self, wanted: dict[str, Iterable[int]]) -> None:
        """Read the indexes of ``wanted`` not asked for yet: one call of ``read`` per source."""
        for source, indexes in wanted.items():
            new = sorted({i for i in indexes if i >= 0} - self.asked[source])
            if not new:
                continue
            self.asked[source].update(new)
            for chunk in self.read(source, new):
                self.chunks[source].setdefault(chunk.chunk_index, []).append(chunk)

    def known(self, source: str, index: int) -> bool:
        return index < 0 or index in self.asked[source]

    def get(self, source: str, index: int, version: str) -> Chunk | None:
        for chunk in self.chunks[source].get(index, ()):
            if chunk.file_hash == version:
                return chunk
        return None

    def version(self, hit: Hit) -> str | None:
        """The file version (``file_hash``) of the stored chunk of ``hit``, if stored."""
        for chunk in self.chunks[hit.source].get(hit.chunk_index, ()):
            if chunk.chunk_id == hit.chunk_id:
                return chunk.file_hash
        return None


class _Context:
    """The passages being built, the tokens they use and the chunk cache."""

    def __init__(self, counter: TokenCounter, budget: int, cache: _Cache | None) -> None:
        self.counter = counter
        self.budget = budget
        self.cache = cache
        self.passages: list[_Grown] = []
        self.used = 0
        self.window = 1  # neighbours read per open side and fetch; doubles per fetch

    def count(self, text: str) -> int:
        return len(self.counter.token_spans(text))

    # ------------------------------------------------------------- seeds
    def seed(self, hits: Sequence[Hit]) -> None:
        if self.cache is not None and hits:
            tokens = sum(self.count(h.text) for h in hits) / len(hits)
            # neighbours per side that the budget left after the hits could pay for
            spare = max(0.0, self.budget - tokens * len(hits)) / max(tokens, 1.0)
            self.window = max(1, math.ceil(spare / (2 * len(hits))))
            self.cache.fetch(self._around(hits, self.window))
        for hit in hits:
            if not self._add_hit(hit):
                break

    def _around(self, hits: Sequence[Hit], window: int) -> dict[str, set[int]]:
        wanted: dict[str, set[int]] = defaultdict(set)
        for hit in hits:
            wanted[hit.source].update(range(hit.chunk_index - window, hit.chunk_index + window + 1))
        return wanted

    def _add_hit(self, hit: Hit) -> bool:
        """Add ``hit`` as a passage or into one; ``False`` when it does not fit."""
        version = self.cache.version(hit) if self.cache is not None else None
        for grown in self.passages:
            if grown.section() != (hit.source, hit.heading, hit.page):
                continue
            if grown.version != version or not grown.touches(hit.chunk_index):
                continue
            if grown.first <= hit.chunk_index <= grown.last:
                grown.hits.append(hit)
                return True
            side = _AFTER if hit.chunk_index > grown.last else _BEFORE
            if not self._grow(grown, side, hit.text):
                return False
            grown.hits.append(hit)
            self._merge_touching(grown)
            return True
        tokens = self.count(hit.text)
        if self.used + tokens > self.budget:
            if not self.passages:  # the best hit alone is longer than the budget: cut it
                spans = self.counter.token_spans(hit.text)
                text = hit.text[: spans[self.budget - 1][1]]
                cut = self._new(hit, None, text, self.count(text))
                cut.open = {_AFTER: False, _BEFORE: False}
                self.passages.append(cut)
                self.used = cut.tokens
            return False
        grown = self._new(hit, version, hit.text, tokens)
        if version is None:
            grown.open = {_AFTER: False, _BEFORE: False}
        self.passages.append(grown)
        self.used += tokens
        return True

    @staticmethod
    def _new(hit: Hit, version: str | None, text: str, tokens: int) -> _Grown:
        return _Grown([hit], version, hit.chunk_index, hit.chunk_index, text, text, text, tokens)

    # ------------------------------------------------------------- growth
    def _grow(self, grown: _Grown, side: int, chunk_text: str) -> bool:
        """Join the chunk next to ``grown`` on ``side``; ``False`` (nothing changed) when
        the result would not fit the budget."""
        if side == _AFTER:
            text = join_chunks(grown.text, chunk_text, grown.last_text, chunk_text)
        else:
            text = join_chunks(chunk_text, grown.text, chunk_text, grown.first_text)
        tokens = self.count(text)
        if self.used - grown.tokens + tokens > self.budget:
            return False
        self.used += tokens - grown.tokens
        grown.text, grown.tokens = text, tokens
        if side == _AFTER:
            grown.last, grown.last_text = grown.last + 1, chunk_text
        else:
            grown.first, grown.first_text = grown.first - 1, chunk_text
        return True

    def _merge_touching(self, grown: _Grown) -> None:
        """Join into one every other passage of ``grown``'s section that it now touches."""
        for other in list(self.passages):
            if other is grown or other.section() != grown.section():
                continue
            if other.version != grown.version:
                continue
            if other.first == grown.last + 1:
                self._merge(grown, other, grown, other)
            elif other.last == grown.first - 1:
                self._merge(grown, other, other, grown)

    def _merge(self, grown: _Grown, other: _Grown, left: _Grown, right: _Grown) -> None:
        text = join_chunks(left.text, right.text, left.last_text, right.first_text)
        tokens = self.count(text)
        if self.used - grown.tokens - other.tokens + tokens > self.budget:
            return  # (joining tokenises the seam anew; it never grows in practice)
        first = self.passages.index(grown) < self.passages.index(other)
        keep, drop = (grown, other) if first else (other, grown)
        self.used += tokens - grown.tokens - other.tokens
        keep.hits = keep.hits + drop.hits  # the passage earlier in the list ranks better
        keep.first, keep.last = left.first, right.last
        keep.first_text, keep.last_text = left.first_text, right.last_text
        keep.text, keep.tokens = text, tokens
        keep.open = {_AFTER: right.open[_AFTER], _BEFORE: left.open[_BEFORE]}
        self.passages.remove(drop)

    def expand(self) -> None:
        """Grow the passages round-robin until no side of any passage is open."""
        assert self.cache is not None
        while True:
            growing = [g for g in self.passages if g.next_side() is not None]
            if not growing:
                return
            for grown in growing:
                if grown in self.passages:  # not merged away during this round
                    self._step(grown)

    def _step(self, grown: _Grown) -> None:
        side = grown.next_side()
        if side is None:
            return
        grown.turn = -side
        index = grown.last + 1 if side == _AFTER else grown.first - 1
        source = grown.hit.source
        if index < 0:
            grown.open[side] = False
            return
        if not self.cache.known(source, index):
            self._fetch_more()
        other = next(
            (
                o
                for o in self.passages
                if o is not grown
                and o.section() == grown.section()
                and o.version == grown.version
                and o.first <= index <= o.last
            ),
            None,
        )
        if other is not None:
            before = len(self.passages)
            self._merge_touching(grown)
            if len(self.passages) == before:  # the join would not fit
                grown.open[side] = False
            return
        chunk = self.cache.get(source, index, grown.version)
        if (
            chunk is None
            or (chunk.heading, chunk.page) != (grown.hit.heading, grown.hit.page)
            or not self._grow(grown, side, chunk.text)
        ):
            grown.open[side] = False
            return
        self._merge_touching(grown)

    def _fetch_more(self) -> None:
        """Read the next ``window`` indexes beyond every open side (doubling the window)."""
        self.window *= 2
        wanted: dict[str, set[int]] = defaultdict(set)
        for grown in self.passages:
            source = grown.hit.source
            if grown.open[_AFTER]:
                wanted[source].update(range(grown.last + 1, grown.last + 1 + self.window))
            if grown.open[_BEFORE]:
                wanted[source].update(range(grown.first - self.window, grown.first))
        self.cache.fetch(wanted)
