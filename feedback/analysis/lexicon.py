"""The per-language sentiment lexicon type and the emoji valences shared by all.

Valences are on a rough -3..+3 scale written for customer feedback: a word
counts as it reads in a review or a complaint ("delayed" and "lama" are
negative, "arrived" and "chegou" mildly positive so that negating them turns
negative). Words are stored in the normalised form of ``tokens.tokenize``:
lower case and without accents.
"""

from dataclasses import dataclass, field


def word_set(words: str) -> frozenset[str]:
    """Return the whitespace-separated words of a string as a set."""
    return frozenset(words.split())


def weighted(weight: float, words: str) -> dict[str, float]:
    """Map each whitespace-separated word to ``weight``."""
    return dict.fromkeys(words.split(), weight)


@dataclass(frozen=True)
class Lexicon:
    language: str
    valence: dict[str, float]
    # Words that flip a sentiment word up to three tokens after them.
    negators: frozenset[str]
    # Multipliers of the next sentiment word ("very good", "sangat bagus").
    intensifiers: dict[str, float]
    # Multipliers of the previous sentiment word ("bagus banget").
    post_intensifiers: dict[str, float] = field(default_factory=dict)
    # Words like "but": what comes before them counts half.
    contrast: frozenset[str] = frozenset()
    # Common words of the language, the evidence for language detection.
    function_words: frozenset[str] = frozenset()
    # Valences of negated words that mean more than a reversed valence: "nao
    # recebi" is a clear complaint although "recebi" alone is barely positive.
    negated: dict[str, float] = field(default_factory=dict)
    # Valences of borrowed words ("mantap" is native, "recommended" is not):
    # they score sentiment but are no evidence for the language.
    loanwords: dict[str, float] = field(default_factory=dict)

    def markers(self) -> frozenset[str]:
        """Return the words that suggest a text is in this language."""
        return frozenset(
            self.function_words
            | self.valence.keys()
            | self.negators
            | self.intensifiers.keys()
            | self.post_intensifiers.keys()
            | self.contrast
        )

    def all_valences(self) -> dict[str, float]:
        return {**self.loanwords, **self.valence, **EMOJI_VALENCE}


EMOJI_VALENCE: dict[str, float] = {
    **weighted(2.5, "😍 🥰 😘 ❤ 💕 💖 💗 💯 👍 👌 👏 🙌 🤩 🥳 🎉 ⭐ 🌟 ✨ 💪"),
    **weighted(2.0, "😀 😃 😄 😁 😊 ☺ 🙂 😆 🤗 😎 😇 🔥 ✅ 🙏 💙 💚 💛 💜 🤍"),
    **weighted(1.0, "😂 🤣 😉 😋"),
    **weighted(-1.0, "😐 😑 😕 🤔 😬 😅"),
    **weighted(-2.0, "😞 😔 😟 😒 🙄 😓 😥 😢 😪 🥺 ☹ 🙁 😣 😖 😫 😩 ❌ ⚠"),
    **weighted(-2.5, "😭 😡 😠 🤬 👎 💔 🤮 🤢 😤 😱 🖕 💩"),
    **weighted(2.0, ":) :-) :d :-d ;) ;-) =) :p :-p <3 :))"),
    **weighted(-2.0, ":( :-( :/ :-/ :'( </3 :(( =( :|"),
}
