"""Text analysis of feedback on intake: language, sentiment and topics.

Everything is in-process dictionary and set look-ups after one regex
tokenisation, with lexicons kept in this package, so analysis needs no
network and no model files. English, Indonesian and Portuguese have sentiment
lexicons; other languages get the three lexicons merged.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from feedback.analysis import lexicon_en, lexicon_id, lexicon_pt
from feedback.analysis.language import build_markers, detect_language
from feedback.analysis.lexicon import Lexicon
from feedback.analysis.sentiment import (
    contribution_at,
    label_of,
    merge_lexicons,
    score_from_valence,
)
from feedback.analysis.tokens import squeeze_repeats, tokenize
from feedback.analysis.topics import (
    KeywordMatcher,
    Phrase,
    build_matchers,
    normalize_language,
)

logger = logging.getLogger(__name__)

__all__ = ["Analyzer", "TextAnalysis"]

LEXICONS: dict[str, Lexicon] = {
    lexicon.language: lexicon
    for lexicon in (lexicon_en.LEXICON, lexicon_id.LEXICON, lexicon_pt.LEXICON)
}
_MERGED_LEXICON = merge_lexicons(list(LEXICONS.values()))
_MARKERS = build_markers(LEXICONS.values())

# Per-token results are cached. Past this many distinct tokens in one
# language the cache starts over, which bounds memory on unusual input.
_CACHE_LIMIT = 200_000
# A matched phrase outweighs a single word, by one point per extra word.
_PHRASE_BONUS = 1.0
_UNSEEN = object()

# valence, is_contrast, single-word topic ids, phrases starting here
_TokenInfo = tuple[float, bool, tuple[int, ...], list[Phrase] | None]


def _detect(tokens: list[str]) -> str:
    language = detect_language(set(tokens), _MARKERS)
    if language or not tokens:
        return language
    # Only undecided texts pay for this: short reviews are often one
    # stretched word ("mantappp", "bagusss") that is a marker once shortened.
    squeezed = {form for token in tokens for form in squeeze_repeats(token)}
    return detect_language(squeezed, _MARKERS)


@dataclass(frozen=True, slots=True)
class TextAnalysis:
    language: str  # ISO 639-1 code, "" when the text is empty or undecidable
    sentiment: float | None  # in [-1, 1]; None when the text is empty
    sentiment_label: str  # "positive" | "neutral" | "negative" | "" (empty text)
    topic_ids: tuple[int, ...]  # matched Topic ids, strongest first; () if none


_EMPTY = TextAnalysis(language="", sentiment=None, sentiment_label="", topic_ids=())


@dataclass
class _LanguageModel:
    """One lexicon and one keyword matcher, with their per-token cache."""

    lexicon: Lexicon
    matcher: KeywordMatcher
    valences: dict[str, float] = field(init=False)
    cache: dict[str, _TokenInfo | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.valences = self.lexicon.all_valences()

    def token_info(self, token: str) -> _TokenInfo | None:
        info = self._resolve(token)
        if len(self.cache) >= _CACHE_LIMIT:
            self.cache.clear()
        self.cache[token] = info
        return info

    def _resolve(self, token: str) -> _TokenInfo | None:
        valence = self.valences.get(token)
        if valence is None:
            for squeezed in squeeze_repeats(token):
                valence = self.valences.get(squeezed)
                if valence is not None:
                    break
        is_contrast = token in self.lexicon.contrast
        topics = self.matcher.topics_of_word(token)
        phrases = self.matcher.phrases.get(token)
        if valence is None and not is_contrast and not topics and not phrases:
            return None
        return valence or 0.0, is_contrast, topics, phrases


class Analyzer:
    """Detect language, score sentiment and match topic keywords in feedback.

    Build one per process (or per batch) and reuse it: it caches the
    per-token look-ups. An instance is not safe to share between threads
    that analyse at the same time, because the caches are plain dicts.
    """

    def __init__(self, keywords: Iterable[tuple[int, str, str]]):
        self._matchers = build_matchers(keywords)
        self._models: dict[tuple[str, str], _LanguageModel] = {}
        logger.debug(
            "Analyzer built with keywords for %s", sorted(self._matchers.keys())
        )

    @classmethod
    def from_database(cls) -> "Analyzer":
        """Build an analyzer from the keywords of the active topics."""
        from feedback.models import TopicKeyword

        rows = TopicKeyword.objects.filter(topic__is_active=True).values_list(
            "topic_id", "language", "phrase"
        )
        return cls(rows)

    def analyze(self, text: str, language: str = "") -> TextAnalysis:
        """Analyse one text; a non-empty ``language`` overrides detection."""
        if not text or text.isspace():
            return _EMPTY
        tokens = tokenize(text)
        if language:
            language = normalize_language(language)
        else:
            language = _detect(tokens)
        total, topic_ids = self._score(tokens, self._model_for(language))
        score = score_from_valence(total)
        return TextAnalysis(language, score, label_of(score), topic_ids)

    def analyze_many(self, items: Iterable[tuple[str, str]]) -> list[TextAnalysis]:
        """Analyse (text, language hint) pairs in order."""
        analyze = self.analyze
        return [analyze(text, language) for text, language in items]

    def _model_for(self, language: str) -> _LanguageModel:
        lexicon_key = language if language in LEXICONS else "*"
        matcher_key = language if language in self._matchers else "*"
        model = self._models.get((lexicon_key, matcher_key))
        if model is None:
            lexicon = LEXICONS.get(lexicon_key, _MERGED_LEXICON)
            model = _LanguageModel(lexicon, self._matchers[matcher_key])
            self._models[(lexicon_key, matcher_key)] = model
        return model

    def _score(
        self, tokens: list[str], model: _LanguageModel
    ) -> tuple[float, tuple[int, ...]]:
        """Sum the valences and count topic hits in one pass over the tokens."""
        cache = model.cache
        lexicon = model.lexicon
        valences = model.valences
        total = 0.0
        topic_scores: dict[int, float] = {}
        for index, token in enumerate(tokens):
            info = cache.get(token, _UNSEEN)
            if info is _UNSEEN:
                info = model.token_info(token)
            if info is None:
                continue
            valence, is_contrast, topics, phrases = info
            if is_contrast:
                # "good product but late delivery" leans to the second clause.
                total *= 0.5
            if valence:
                total += contribution_at(lexicon, valences, tokens, index, valence)
            for topic_id in topics:
                topic_scores[topic_id] = topic_scores.get(topic_id, 0.0) + 1.0
            if phrases:
                for phrase in phrases:
                    if phrase.matches_at(tokens, index):
                        bonus = 1.0 + _PHRASE_BONUS * len(phrase.rest)
                        topic_id = phrase.topic_id
                        topic_scores[topic_id] = topic_scores.get(topic_id, 0.0) + bonus
        # sorted() is stable, so equal scores keep the order of first mention.
        ranked = sorted(topic_scores, key=topic_scores.__getitem__, reverse=True)
        return total, tuple(ranked)
