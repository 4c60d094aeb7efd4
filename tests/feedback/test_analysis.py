import csv
import time
from pathlib import Path

import pytest

from feedback.analysis import Analyzer, TextAnalysis
from feedback.models import Topic

DELIVERY, PAYMENT, APP, QUALITY = 1, 2, 3, 4

KEYWORDS = [
    (DELIVERY, "en", "deliver*"),
    (DELIVERY, "en", "lost luggage"),
    (DELIVERY, "en", "flight delay*"),
    (DELIVERY, "id", "pengiriman"),
    (DELIVERY, "id", "kirim*"),
    (DELIVERY, "pt", "entreg*"),
    (DELIVERY, "pt", "não chegou"),
    (PAYMENT, "en", "refund*"),
    (PAYMENT, "en", "credit card"),
    (APP, "en", "app"),
    (APP, "id", "aplikasi"),
    (QUALITY, "en", "quality"),
    (QUALITY, "pt", "qualidade"),
]


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(KEYWORDS)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("The delivery was late and nobody answered my emails", "en"),
        ("@united thanks for getting me home, great crew", "en"),
        ("barang sudah sampai dengan selamat, pengiriman cepat", "id"),
        ("gk sesuai pesanan, kecewa bgt", "id"),
        ("o produto chegou antes do prazo recomendo", "pt"),
        ("não gostei do produto veio com defeito", "pt"),
        ("El producto es muy bueno y llegó rápido", "es"),
    ],
)
def test_detect_language(analyzer, text, language):
    assert analyzer.analyze(text).language == language


def test_language_hint_overrides_detection(analyzer):
    result = analyzer.analyze("the product arrived", "pt-BR")

    assert result.language == "pt"


def test_language_undecidable_is_empty(analyzer):
    result = analyzer.analyze("12345 !!!")

    assert result.language == ""
    assert result.sentiment == 0.0
    assert result.sentiment_label == "neutral"


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Great service, thank you!", "positive"),
        ("This is not good", "negative"),
        ("not bad at all", "positive"),
        ("I didn't like the fabric", "negative"),
        ("barang bagus banget, mantap", "positive"),
        ("barang tidak bagus", "negative"),
        ("gak bagus, pengiriman lama", "negative"),
        ("ga berfungsi dengan baik", "negative"),
        ("gak pake lama, mantul", "positive"),
        ("não gostei", "negative"),
        ("nao recomendo", "negative"),
        ("ainda nao recebi meu pedido", "negative"),
        ("adorei chegou rapido", "positive"),
        ("Where is gate 12?", "neutral"),
    ],
)
def test_sentiment_label(analyzer, text, label):
    assert analyzer.analyze(text).sentiment_label == label


def test_sentiment_intensifier_strengthens(analyzer):
    plain = analyzer.analyze("good").sentiment
    stronger = analyzer.analyze("very good").sentiment
    indonesian_plain = analyzer.analyze("bagus", "id").sentiment
    indonesian_stronger = analyzer.analyze("bagus banget", "id").sentiment

    assert stronger > plain
    assert indonesian_stronger > indonesian_plain


def test_sentiment_contrast_favours_second_clause(analyzer):
    result = analyzer.analyze("The dress is lovely but the delivery was terrible")

    assert result.sentiment_label == "negative"


def test_sentiment_stays_in_range(analyzer):
    praise = analyzer.analyze("amazing " * 50).sentiment
    insult = analyzer.analyze("terrible " * 50).sentiment

    assert 0.99 <= praise <= 1.0
    assert -1.0 <= insult <= -0.99


def test_sentiment_stretched_words(analyzer):
    result = analyzer.analyze("bagussss mantappp")

    assert result.language == "id"
    assert result.sentiment_label == "positive"


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("👍👍", "positive"),
        ("😡", "negative"),
        ("ok 😭", "negative"),
        (":)", "positive"),
    ],
)
def test_sentiment_emoji(analyzer, text, label):
    assert analyzer.analyze(text).sentiment_label == label


def test_html_entities_urls_and_mentions(analyzer):
    result = analyzer.analyze(
        "@JetBlue crew &amp; pilots were great! http://t.co/abc123 &lt;3"
    )

    assert result.language == "en"
    assert result.sentiment_label == "positive"


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text(analyzer, text):
    assert analyzer.analyze(text) == TextAnalysis("", None, "", ())


def test_topic_prefix_matches_word_start(analyzer):
    assert analyzer.analyze("It was delivered broken").topic_ids == (DELIVERY,)
    assert analyzer.analyze("Still waiting for my refunds").topic_ids == (PAYMENT,)


def test_topic_prefix_needs_word_start(analyzer):
    assert analyzer.analyze("undelivered").topic_ids == ()


def test_topic_phrase_needs_all_words_in_order(analyzer):
    assert analyzer.analyze("they lost my luggage").topic_ids == ()
    assert analyzer.analyze("lost luggage again").topic_ids == (DELIVERY,)
    assert analyzer.analyze("pay with credit card").topic_ids == (PAYMENT,)


def test_topic_phrase_with_prefix_last_word(analyzer):
    assert analyzer.analyze("another flight delayed").topic_ids == (DELIVERY,)


def test_topic_phrase_folds_accents(analyzer):
    assert analyzer.analyze("o pedido nao chegou").topic_ids == (DELIVERY,)


def test_topic_strongest_first(analyzer):
    result = analyzer.analyze("The app crashed and the app lost my refund")

    assert result.topic_ids == (APP, PAYMENT)


def test_topic_uses_detected_language_keywords(analyzer):
    # "entrega" is a Portuguese keyword and must not tag English text.
    assert analyzer.analyze("the entrega restaurant was closed").topic_ids == ()


def test_topic_falls_back_to_all_languages(analyzer):
    # Spanish has no keywords, so every language's keywords are tried.
    result = analyzer.analyze("la entrega fue muy lenta y el pedido llego tarde")

    assert result.language == "es"
    assert result.topic_ids == (DELIVERY,)


def test_long_text(analyzer):
    sentence = "Pengiriman lama, tapi barang bagus banget dan seller ramah. "
    text = (sentence * 200)[:10_000]

    started = time.perf_counter()
    result = analyzer.analyze(text)
    elapsed = time.perf_counter() - started

    assert result.language == "id"
    assert result.sentiment_label == "positive"
    assert result.topic_ids == (DELIVERY,)
    assert elapsed < 0.5


def test_analyze_many_keeps_order_and_hints(analyzer):
    results = analyzer.analyze_many(
        [("great", ""), ("", "en"), ("bagus", "id"), ("the app", "EN")]
    )

    assert [result.language for result in results] == ["en", "", "id", "en"]
    assert results[1].sentiment is None
    assert results[3].topic_ids == (APP,)


@pytest.mark.django_db
def test_from_database_uses_active_topics_only():
    delivery = Topic.objects.get(slug="delivery")
    price = Topic.objects.get(slug="price")
    price.is_active = False
    price.save()

    analyzer = Analyzer.from_database()
    result = analyzer.analyze("The delivery was late and the price too expensive")

    assert delivery.id in result.topic_ids
    assert price.id not in result.topic_ids


def read_labelled(path: Path, text_column: str, label_of, limit: int):
    with path.open(encoding="utf-8", newline="") as file:
        for position, row in enumerate(csv.DictReader(file)):
            if position >= limit:
                break
            label = label_of(row)
            if label and row[text_column].strip():
                yield row[text_column], label


# Floors sit about five points under the accuracy measured on these first
# rows (airline 3-class 0.68, PRDECT-ID 0.88, Olist 0.81 when written), so a
# lexicon change that loses accuracy fails here.
LABELLED_SETS = [
    (
        "airline_tweets_us_2015.csv",
        "text",
        lambda row: row["airline_sentiment"],
        0.63,
    ),
    (
        "prdect_id_tokopedia_reviews.csv",
        "Customer Review",
        lambda row: row["Sentiment"].lower(),
        0.84,
    ),
    (
        "olist_classified_reviews_pt.csv",
        "review_comment_message",
        lambda row: {
            "satisfeito_com_pedido": "positive",
            "problemas_de_entrega": "negative",
            "problemas_de_qualidade": "negative",
        }.get(row["most_voted_class"], ""),
        0.76,
    ),
]


@pytest.mark.shared_data
@pytest.mark.parametrize(("file", "text_column", "label_of", "floor"), LABELLED_SETS)
def test_sentiment_accuracy_on_real_data(
    shared_data, analyzer, file, text_column, label_of, floor
):
    rows = list(read_labelled(shared_data / file, text_column, label_of, 2000))
    results = analyzer.analyze_many((text, "") for text, _ in rows)
    correct = sum(
        1
        for (_, label), result in zip(rows, results, strict=True)
        if result.sentiment_label == label
    )

    assert len(rows) > 1000
    assert correct / len(rows) >= floor
