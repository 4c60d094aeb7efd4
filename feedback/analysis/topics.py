"""Keyword rules that tag text with topics.

A keyword is a word ("refund"), a prefix ending in ``*`` ("deliver*" matches
"delivery" and "delivered") or a phrase of several words ("customer service"),
whose last word may also end in ``*`` ("flight delay*"). Keywords are
normalised with the same tokenizer as the text, so "cartão" matches "cartao".
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from feedback.analysis.tokens import tokenize


@dataclass(frozen=True, slots=True)
class Phrase:
    topic_id: int
    # Words after the first one; the last is a prefix when is_prefix is set.
    rest: tuple[str, ...]
    is_prefix: bool

    def matches_at(self, tokens: list[str], start: int) -> bool:
        """Tell whether the words after tokens[start] continue this phrase."""
        end = start + 1 + len(self.rest)
        if end > len(tokens):
            return False
        following = tokens[start + 1 : end]
        if not self.is_prefix:
            return tuple(following) == self.rest
        return tuple(following[:-1]) == self.rest[:-1] and following[-1].startswith(
            self.rest[-1]
        )


@dataclass
class KeywordMatcher:
    """The keywords of one language, indexed for per-token look-ups."""

    words: dict[str, set[int]] = field(default_factory=dict)
    prefixes: dict[str, set[int]] = field(default_factory=dict)
    prefix_lengths: list[int] = field(default_factory=list)
    # First word of a phrase -> the phrases that start with it.
    phrases: dict[str, list[Phrase]] = field(default_factory=dict)

    def add(self, topic_id: int, keyword: str) -> None:
        is_prefix = keyword.rstrip().endswith("*")
        words = tokenize(keyword)
        if not words:
            return
        if len(words) == 1:
            index = self.prefixes if is_prefix else self.words
            index.setdefault(words[0], set()).add(topic_id)
            if is_prefix and len(words[0]) not in self.prefix_lengths:
                self.prefix_lengths.append(len(words[0]))
            return
        phrase = Phrase(topic_id, tuple(words[1:]), is_prefix)
        self.phrases.setdefault(words[0], []).append(phrase)

    def topics_of_word(self, token: str) -> tuple[int, ...]:
        """Return the topics whose single-word keywords match the token."""
        found = set(self.words.get(token, ()))
        for length in self.prefix_lengths:
            if len(token) >= length:
                found |= self.prefixes.get(token[:length], set())
        return tuple(sorted(found))


def build_matchers(
    keywords: Iterable[tuple[int, str, str]],
) -> dict[str, KeywordMatcher]:
    """Index keywords by language; the "*" entry contains every language's."""
    matchers: dict[str, KeywordMatcher] = {"*": KeywordMatcher()}
    for topic_id, language, keyword in keywords:
        language = normalize_language(language)
        matchers.setdefault(language, KeywordMatcher()).add(topic_id, keyword)
        matchers["*"].add(topic_id, keyword)
    return matchers


def normalize_language(code: str) -> str:
    """Reduce a language tag to its ISO 639-1 part ("pt-BR" to "pt")."""
    return code.strip().lower().replace("_", "-").split("-")[0]
