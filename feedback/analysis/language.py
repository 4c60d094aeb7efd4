"""Language detection by counting marker words, one set intersection per
language.

A marker is a common word of one language only: any word listed for two
languages is dropped from both at import, so "a", "no" and "de" decide
nothing. English, Indonesian and Portuguese use their full lexicons as
markers. Spanish, French, German, Italian and Dutch have function words only,
so a text in one of them is recognised instead of being forced into one of
the three languages that have sentiment lexicons.
"""

from collections.abc import Collection

from feedback.analysis.lexicon import Lexicon

_OTHER_LANGUAGES = {
    "es": "el los las y es pero muy gracias usted bueno buena producto llego"
    " hola tambien del al lo su sus ya hay fue tiene tengo pedido malo mala"
    " nunca nada esta estoy porque cuando donde ahora despues todo",
    "fr": "le les et est je vous nous pas une des du avec pour tres merci"
    " bonjour c'est produit livraison qui dans sur ce cette il elle j'ai"
    " n'est tout bien mauvais commande",
    "de": "der die das und ist nicht ich sie mit fur auf ein eine sehr danke"
    " aber auch wie zu den dem von war haben wir gut schlecht bestellung"
    " lieferung immer noch",
    "it": "il gli della che di non per sono molto grazie prodotto ottimo"
    " buono questo anche ma ho ci sei",
    "nl": "het een van en niet ik je zijn met voor op dat maar ook heel goed"
    " slecht bestelling levering bedankt nog wel",
}


def build_markers(lexicons: Collection[Lexicon]) -> dict[str, frozenset[str]]:
    """Build each language's marker set, without words shared by languages."""
    candidates = {lexicon.language: lexicon.markers() for lexicon in lexicons}
    for language, words in _OTHER_LANGUAGES.items():
        candidates[language] = frozenset(words.split())

    seen_once: set[str] = set()
    shared: set[str] = set()
    for words in candidates.values():
        shared |= seen_once & words
        seen_once |= words
    return {language: words - shared for language, words in candidates.items()}


def detect_language(tokens: Collection[str], markers: dict[str, frozenset[str]]) -> str:
    """Return the language with the most distinct marker words, "" on a tie or none."""
    best_language = ""
    best_count = 0
    tied = False
    for language, words in markers.items():
        count = len(words.intersection(tokens))
        if count > best_count:
            best_language, best_count, tied = language, count, False
        elif count == best_count and count:
            tied = True
    return "" if tied else best_language
