"""BM25 sparse vectors: pymilvus' BM25EmbeddingFunction with an analyzer that downloads nothing."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import sparse

# Lucene's EnglishAnalyzer default stop set (org.apache.lucene.analysis.en, Apache-2.0).
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)
_WORD = re.compile(r"\w+")
# Scripts written without spaces between words: Han (CJK ideographs), Hiragana, Katakana,
# Hangul syllables, Thai, Lao, Khmer, Myanmar. Runs of them become character bigrams.
_UNSPACED = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff"
)
_MULTILINGUAL_TOKEN = re.compile(rf"[{_UNSPACED}]+|[^\W{_UNSPACED}]+")
_UNSPACED_RUN = re.compile(rf"[{_UNSPACED}]")


class NotFittedError(RuntimeError):
    """BM25 has no parameters yet: fit it on a corpus or load saved parameters."""


class EnglishAnalyzer:
    """English text → terms: Unicode word runs (``\\w+``), lowercased, Lucene's English stop words
    removed, then the Snowball English (Porter2) stemmer, which needs no data download.

    ``pymilvus.model``'s default analyzer does the same with NLTK's ``punkt_tab`` tokenizer and
    stop-word corpus, which it downloads at run time; this one runs offline.
    """

    # Names the analyzer in the params fingerprint: change it whenever tokens would change.
    id = "word-lower-lucene_en_stop-snowball_en/1"

    def __init__(self) -> None:
        from nltk.stem.snowball import SnowballStemmer

        self._stem = lru_cache(maxsize=200_000)(SnowballStemmer("english").stem)

    def __call__(self, text: str) -> list[str]:
        """The terms of ``text``, in order, repeats kept."""
        return [
            self._stem(word)
            for word in _WORD.findall(text.lower())
            if word not in ENGLISH_STOP_WORDS
        ]


class MultilingualAnalyzer:
    """Text in any language → terms, with no dictionary and no download.

    Text is NFKC-normalised and case-folded. Runs of letters and digits of space-separated
    scripts are terms as they are (no stemming, no stop words: both are per language).
    Runs of scripts written without spaces (Chinese, Japanese kana, Korean Hangul, Thai, Lao,
    Khmer, Myanmar) become overlapping character bigrams (a lone character stays a unigram),
    as Lucene's ``CJKBigramFilter`` does for CJK; bigram indexing is the standard
    dictionary-free baseline for Chinese and Japanese retrieval (Kwok, 1997, "Comparing
    representations in Chinese information retrieval", SIGIR).
    """

    id = "nfkc-casefold-word-unspaced_bigram/1"

    def __call__(self, text: str) -> list[str]:
        """The terms of ``text``, in order, repeats kept."""
        terms: list[str] = []
        for run in _MULTILINGUAL_TOKEN.findall(unicodedata.normalize("NFKC", text).casefold()):
            if len(run) > 1 and _UNSPACED_RUN.match(run):
                terms.extend(run[i : i + 2] for i in range(len(run) - 1))
            else:
                terms.append(run)
        return terms


ANALYZERS = {"english": EnglishAnalyzer, "multilingual": MultilingualAnalyzer}


def _require_nltk() -> None:
    """Refuse, with the fix, when NLTK (the ``english`` analyzer's stemmer) or PyYAML is
    missing: ``pymilvus.model`` would run ``pip install nltk`` itself for its default
    analyzer, which is never built here (every ``BM25EmbeddingFunction`` gets an analyzer)."""
    if importlib.util.find_spec("nltk") is None or importlib.util.find_spec("yaml") is None:
        raise ImportError(
            "the bm25 function needs nltk and PyYAML (pinned in requirements.lock); install "
            "them with pip, pinned"
        )


class BM25Sparse:
    """BM25 weights (Robertson & Zaragoza, 2009, "The Probabilistic Relevance Framework:
    BM25 and Beyond", Found. Trends Inf. Retr. 3(4)) through ``pymilvus.model``'s
    ``BM25EmbeddingFunction``.

    A document's weight for term ``t`` is ``tf·(k1+1) / (tf + k1·(1 − b + b·|d|/avgdl))`` and
    a query's is ``IDF(t) = ln((N − n_t + 0.5) / (n_t + 0.5))`` (negative IDFs are raised to
    ``epsilon`` × the mean IDF, as in ``rank_bm25``), so their inner product is the BM25
    score. ``N``, ``n_t`` and ``avgdl`` come from :meth:`fit`; the vocabulary is the fitted
    corpus's terms, in first-seen order. Defaults ``k1 = 1.5``, ``b = 0.75``,
    ``epsilon = 0.25`` are ``pymilvus.model``'s.

    Parameters are saved and loaded with ``BM25EmbeddingFunction.save`` / ``load`` (its JSON
    file); :attr:`fingerprint` names them. Until fitted or loaded, queries raise
    :class:`NotFittedError`; documents do too unless :meth:`defer` was called, after which
    they get empty rows (an ingest writes them, then fits and rewrites every sparse row).

    Args:
        k1, b, epsilon: BM25 parameters used by the next :meth:`fit`.
        analyzer: ``english`` (:class:`EnglishAnalyzer`, function name ``bm25``) or
            ``multilingual`` (:class:`MultilingualAnalyzer`, ``bm25-multilingual``).

    Raises:
        ImportError: NLTK or PyYAML is missing.
        KeyError: an unknown analyzer.
    """

    max_tokens = 2**31 - 1  # no input limit

    def __init__(
        self,
        *,
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
        analyzer: str = "english",
    ) -> None:
        _require_nltk()
        from pymilvus.model.sparse.bm25.bm25 import BM25EmbeddingFunction

        self.name = "bm25" if analyzer == "english" else f"bm25-{analyzer}"
        self.analyzer = ANALYZERS[analyzer]()
        self.config = {"k1": float(k1), "b": float(b), "epsilon": float(epsilon)}
        self.function = BM25EmbeddingFunction(analyzer=self.analyzer, **self.config)
        self.fingerprint = ""
        self._deferred = False

    @property
    def vocab_size(self) -> int:
        """Terms of the fitted vocabulary (0 until fitted)."""
        return len(self.function.idf)

    def _params_fingerprint(self) -> str:
        """16 hex of sha256 over the analyzer and every fitted parameter."""
        f = self.function
        words = sorted(f.idf, key=lambda word: f.idf[word][1])
        record = {
            "analyzer": self.analyzer.id,
            "corpus_size": f.corpus_size,
            "avgdl": f.avgdl,
            "k1": f.k1,
            "b": f.b,
            "epsilon": f.epsilon,
            "words": words,
            "idf": [f.idf[word][0] for word in words],
        }
        return hashlib.sha256(json.dumps(record).encode()).hexdigest()[:16]

    def fit(self, texts: Sequence[str]) -> None:
        """Fit IDF, average length and vocabulary on ``texts`` with the configured k1, b,
        epsilon.

        Raises:
            ValueError: ``texts`` is empty.
        """
        if not texts:
            raise ValueError("BM25 needs at least one text to fit on")
        for key, value in self.config.items():
            setattr(self.function, key, value)
        self.function.fit(list(texts))
        self.fingerprint = self._params_fingerprint()
        self._deferred = False

    def save(self, path: str) -> None:
        """Write the fitted parameters to ``path`` (``BM25EmbeddingFunction.save``'s JSON).

        Raises:
            NotFittedError: nothing fitted or loaded.
        """
        self._require_fitted()
        self.function.save(path)

    def load(self, path: str) -> None:
        """Read parameters written by :meth:`save` (they bring their own k1, b, epsilon).

        Raises:
            RuntimeError: the file cannot be read.
        """
        self.function.load(path)
        self.fingerprint = self._params_fingerprint()
        self._deferred = False

    def defer(self) -> None:
        """Until the next fit, encode documents as empty rows instead of raising."""
        self._deferred = True

    def stale(self) -> str | None:
        """Why the loaded parameters differ from the configured ones (``None`` if they
        do not)."""
        loaded = {key: getattr(self.function, key) for key in self.config}
        if self.fingerprint and loaded != self.config:
            return f"BM25 settings changed from {loaded} to {self.config}"
        return None

    def _require_fitted(self) -> None:
        if not self.fingerprint:
            raise NotFittedError(
                "BM25 has no parameters: fit it on the corpus (python -m ingest) or load them"
            )

    def encode_documents(self, texts: Sequence[str]) -> sparse.csr_array:
        """``csr_array [len(texts), vocab_size]`` of ``float32`` document term weights.

        Raises:
            NotFittedError: not fitted, loaded or deferred.
        """
        if not self.fingerprint and self._deferred:
            return sparse.csr_array((len(texts), 0), dtype=np.float32)
        self._require_fitted()
        if not texts:
            return sparse.csr_array((0, self.vocab_size), dtype=np.float32)
        matrix = sparse.csr_array(self.function.encode_documents(list(texts)), dtype=np.float32)
        matrix.eliminate_zeros()
        return matrix

    def encode_queries(self, texts: Sequence[str]) -> sparse.csr_array:
        """``csr_array [len(texts), vocab_size]`` of ``float32`` query IDF weights (a term
        repeated in the query counts each time).

        Raises:
            NotFittedError: not fitted or loaded.
        """
        self._require_fitted()
        if not texts:
            return sparse.csr_array((0, self.vocab_size), dtype=np.float32)
        matrix = sparse.csr_array(self.function.encode_queries(list(texts)), dtype=np.float32)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()  # a term in half the corpus has IDF 0
        return matrix

    def query_terms(self, query: str) -> list[str]:
        """The words of ``query`` (``\\w+`` runs, as the query spells them) whose analyzed
        terms have a positive weight in its query vector (in the fitted vocabulary, IDF
        above 0), in query order, each once; stop words never count (the analyzer drops
        them). See ``Embedder.query_terms``.

        Raises:
            NotFittedError: not fitted or loaded.
        """
        vector = self.encode_queries([query])
        weighted = set(vector.indices.tolist())
        idf = self.function.idf  # term -> [IDF, vocabulary index]
        words = (match.group() for match in _WORD.finditer(query))
        return list(
            dict.fromkeys(
                word
                for word in words
                if any(term in idf and idf[term][1] in weighted for term in self.analyzer(word))
            )
        )
