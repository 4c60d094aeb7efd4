"""Sentiment scoring of a token list against one language's lexicon."""

import math

from feedback.analysis.lexicon import Lexicon

# A negated word counts three quarters of its valence, reversed: "not bad" is
# mildly positive rather than as positive as "good" is.
NEGATION_FACTOR = -0.75
# How many tokens before a sentiment word a negator still reaches, so that
# "tidak terlalu bagus" and "did not like" are negated.
NEGATION_WINDOW = 3
# Valence sum that maps to a score of tanh(1), about 0.76.
SCORE_SCALE = 3.0
# Scores at or beyond these are labelled positive or negative, else neutral.
# Chosen on the even rows of the labelled data sets (bench/analysis_accuracy.py).
POSITIVE_THRESHOLD = 0.1
NEGATIVE_THRESHOLD = -0.05


def merge_lexicons(lexicons: list[Lexicon]) -> Lexicon:
    """Combine lexicons for text whose language has none of its own."""
    valence: dict[str, float] = {}
    intensifiers: dict[str, float] = {}
    post_intensifiers: dict[str, float] = {}
    negated: dict[str, float] = {}
    for lexicon in lexicons:
        valence.update(lexicon.all_valences())
        negated.update(lexicon.negated)
        intensifiers.update(lexicon.intensifiers)
        post_intensifiers.update(lexicon.post_intensifiers)
    return Lexicon(
        language="*",
        valence=valence,
        negators=frozenset().union(*(lexicon.negators for lexicon in lexicons)),
        intensifiers=intensifiers,
        post_intensifiers=post_intensifiers,
        contrast=frozenset().union(*(lexicon.contrast for lexicon in lexicons)),
        negated=negated,
    )


def contribution_at(
    lexicon: Lexicon,
    valences: dict[str, float],
    tokens: list[str],
    index: int,
    valence: float,
) -> float:
    """Return the valence of tokens[index] after negators and intensifiers.

    A negator reaches back over words of the same polarity, so in "tidak
    berfungsi dengan baik" both words are negated, but it stops at a word of
    the other polarity, at a "but" word and at punctuation: in "gak bagus,
    pengiriman lama" only "bagus" is negated.
    """
    token = tokens[index]
    factor = 1.0
    if index:
        factor *= lexicon.intensifiers.get(tokens[index - 1], 1.0)
    if index + 1 < len(tokens):
        factor *= lexicon.post_intensifiers.get(tokens[index + 1], 1.0)
    for before in range(index - 1, max(index - NEGATION_WINDOW, 0) - 1, -1):
        word = tokens[before]
        if word in lexicon.negators:
            negated = lexicon.negated.get(token)
            if negated is not None:
                return negated * factor
            return valence * factor * NEGATION_FACTOR
        if not word[0].isalpha() or word in lexicon.contrast:
            break
        other = valences.get(word)
        if other is not None and (other > 0) != (valence > 0):
            break
    return valence * factor


def score_from_valence(total: float) -> float:
    """Squash a valence sum into [-1, 1]."""
    return round(math.tanh(total / SCORE_SCALE), 4)


def label_of(score: float) -> str:
    if score >= POSITIVE_THRESHOLD:
        return "positive"
    if score <= NEGATIVE_THRESHOLD:
        return "negative"
    return "neutral"
