"""Text normalisation and the one regex pass that splits feedback into tokens.

Everything downstream is dictionary and set look-ups on these tokens, so the
normalisation here decides what the lexicons must spell: lower case, accents
folded to ASCII letters, typographic apostrophes turned into ``'``.
"""

import html
import re

# Accented Latin letters seen in Portuguese, Indonesian loanwords and the
# other detected languages, folded so "não" and "nao" are one lexicon entry.
_FOLD = str.maketrans(
    {
        **dict.fromkeys("áàâãä", "a"),
        **dict.fromkeys("éèêë", "e"),
        **dict.fromkeys("íìîï", "i"),
        **dict.fromkeys("óòôõö", "o"),
        **dict.fromkeys("úùûü", "u"),
        "ç": "c",
        "ñ": "n",
        "ß": "ss",
        "’": "'",
        "‘": "'",
        "`": "'",
        # Indonesian writes reduplication as "bener²"; split it like "bener2".
        "²": " ",
    }
)

# URLs and @mentions carry no sentiment and would add noise words ("co", "t").
_NOISE = re.compile(r"https?://\S+|www\.\S+|@\w+")

# Alternatives, in order: words with inner apostrophes ("don't"), emoticons
# (after lower-casing, so ":D" is ":d"), single emoji code points, and runs of
# punctuation, kept as tokens because they end the reach of a negation.
# Digits split words, so Indonesian reduplication "baik2" yields "baik".
_TOKEN = re.compile(
    r"[^\W\d_]+(?:'[^\W\d_]+)*"
    r"|[:;=][-o^']?[)(\]\[dp/\\|*]+|<3|</3"
    r"|[\u2600-\u27bf\u2b50\U0001f300-\U0001faff]"
    r"|[.,;!?]+"
)

_REPEATED_LETTER = re.compile(r"(.)\1{2,}")


def tokenize(text: str) -> list[str]:
    """Split feedback text into normalised tokens: words, emoticons, emoji."""
    text = text.lower()
    if "&" in text:
        text = html.unescape(text)
    if "@" in text or "http" in text or "www." in text:
        text = _NOISE.sub(" ", text)
    return _TOKEN.findall(text.translate(_FOLD))


def squeeze_repeats(token: str) -> tuple[str, str]:
    """Return the token with letter runs of three or more cut to two and to one.

    Both forms are needed: "goood" is "good", but "bagusss" is "bagus".
    """
    return _REPEATED_LETTER.sub(r"\1\1", token), _REPEATED_LETTER.sub(r"\1", token)
