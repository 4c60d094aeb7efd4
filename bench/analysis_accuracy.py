"""Measure the text analyzer on the labelled real data sets.

Prints, per data set and per half, the language-detection accuracy, the
sentiment-label accuracy with a confusion matrix and macro F1, topic
precision and recall where the set's labels map to our topics, and the
analyzer's throughput on one core. The lexicons were tuned on the rows at
even positions of each file (the development half). Rows at odd positions
are reported separately as the held-out half.

    .venv/bin/python bench/analysis_accuracy.py [--data DIR]

Runs without Django settings or a database: topics come from
``feedback.seeds.DEFAULT_TOPICS``, numbered 1.. in their order there.
"""

import argparse
import csv
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from feedback.analysis import Analyzer, TextAnalysis
from feedback.seeds import DEFAULT_TOPICS

LABELS = ("negative", "neutral", "positive")
TOPIC_IDS = {slug: number for number, slug in enumerate(DEFAULT_TOPICS, start=1)}

# Airline complaint reasons that name one of our topics. "Bad Flight",
# "longlines" and "Can't Tell" have no counterpart and are left out.
AIRLINE_REASON_TOPICS = {
    "Customer Service Issue": "customer-service",
    "Flight Attendant Complaints": "customer-service",
    "Late Flight": "delivery",
    "Cancelled Flight": "delivery",
    "Lost Luggage": "delivery",
    "Damaged Luggage": "delivery",
    "Flight Booking Problems": "payment-checkout",
}
OLIST_CLASS_TOPICS = {
    "problemas_de_entrega": "delivery",
    "problemas_de_qualidade": "product-quality",
}
OLIST_CLASS_SENTIMENT = {
    "satisfeito_com_pedido": "positive",
    "problemas_de_entrega": "negative",
    "problemas_de_qualidade": "negative",
}


@dataclass(frozen=True)
class Row:
    text: str
    sentiment: str  # gold label, "" when the row has none
    topic: str  # gold topic slug, "" when the row maps to none


@dataclass(frozen=True)
class DataSet:
    name: str
    file: str
    language: str
    label_source: str
    read_row: Callable[[dict[str, str]], Row | None]


def score_to_label(score: str, negative_max: int, neutral_max: int) -> str:
    """Map a numeric score to a label by two inclusive upper bounds."""
    if not score.strip():
        return ""
    value = int(float(score))
    if value <= negative_max:
        return "negative"
    if value <= neutral_max:
        return "neutral"
    return "positive"


def stars_to_label(stars: str) -> str:
    """Map a 1-5 rating to a label: 1-2 negative, 3 neutral, 4-5 positive."""
    return score_to_label(stars, negative_max=2, neutral_max=3)


def nps_to_label(score: str) -> str:
    """Map 0-10 to a label: detractor negative, passive neutral, promoter positive."""
    return score_to_label(score, negative_max=6, neutral_max=8)


def join_text(*parts: str) -> str:
    return ". ".join(part.strip() for part in parts if part and part.strip())


DATA_SETS = [
    DataSet(
        "airline tweets",
        "airline_tweets_us_2015.csv",
        "en",
        "crowd label",
        lambda r: Row(
            r["text"],
            r["airline_sentiment"],
            AIRLINE_REASON_TOPICS.get(r["negativereason"], ""),
        ),
    ),
    DataSet(
        "PRDECT-ID",
        "prdect_id_tokopedia_reviews.csv",
        "id",
        "expert label",
        lambda r: Row(r["Customer Review"], r["Sentiment"].lower(), ""),
    ),
    DataSet(
        "Olist classified",
        "olist_classified_reviews_pt.csv",
        "pt",
        "annotator class",
        lambda r: Row(
            r["review_comment_message"],
            OLIST_CLASS_SENTIMENT.get(r["most_voted_class"], ""),
            OLIST_CLASS_TOPICS.get(r["most_voted_class"], ""),
        ),
    ),
    DataSet(
        "Olist reviews",
        "olist_sample/olist_order_reviews_dataset.csv",
        "pt",
        "stars (proxy)",
        lambda r: Row(
            join_text(r["review_comment_title"], r["review_comment_message"]),
            stars_to_label(r["review_score"]),
            "",
        ),
    ),
    DataSet(
        "Tokopedia 2019",
        "tokopedia_product_reviews_2019.csv",
        "id",
        "stars (proxy)",
        lambda r: Row(r["text"], stars_to_label(r["rating"]), ""),
    ),
    DataSet(
        "Shopee app, relevant",
        "shopee_app_reviews_relevant_2025.csv",
        "id",
        "stars (proxy)",
        lambda r: Row(r["review"], stars_to_label(r["rating"]), ""),
    ),
    DataSet(
        "Shopee app, newest",
        "shopee_app_reviews_newest_2025.csv",
        "id",
        "stars (proxy)",
        lambda r: Row(r["content"], stars_to_label(r["score"]), ""),
    ),
    DataSet(
        "Women's clothing",
        "womens_clothing_ecommerce_reviews.csv",
        "en",
        "stars (proxy)",
        lambda r: Row(
            join_text(r["Title"], r["Review Text"]), stars_to_label(r["Rating"]), ""
        ),
    ),
    DataSet(
        "Telecom NPS",
        "nps_telecom_verbatims_2018.csv",
        "en",
        "NPS group (proxy)",
        lambda r: Row(r["text"], nps_to_label(r["NPS_SCORE"]), ""),
    ),
]


def read_halves(path: Path, data_set: DataSet) -> tuple[list[Row], list[Row]]:
    """Read non-empty rows, split by file position into even and odd halves."""
    halves: tuple[list[Row], list[Row]] = ([], [])
    with path.open(encoding="utf-8", newline="") as file:
        for position, record in enumerate(csv.DictReader(file)):
            row = data_set.read_row(record)
            if row is not None and row.text.strip():
                halves[position % 2].append(row)
    return halves


def build_analyzer() -> Analyzer:
    keywords = [
        (TOPIC_IDS[slug], language, phrase)
        for slug, (_name, languages) in DEFAULT_TOPICS.items()
        for language, phrases in languages.items()
        for phrase in phrases
    ]
    return Analyzer(keywords)


def macro_f1(confusion: dict[tuple[str, str], int], labels: list[str]) -> float:
    """Average the per-label F1 over the gold labels present in the data."""
    scores = []
    for label in labels:
        true_positive = confusion.get((label, label), 0)
        predicted = sum(confusion.get((gold, label), 0) for gold in LABELS)
        actual = sum(confusion.get((label, guess), 0) for guess in LABELS)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        total = precision + recall
        scores.append(2 * precision * recall / total if total else 0.0)
    return sum(scores) / len(scores)


def sentiment_lines(rows: list[Row], results: list[TextAnalysis]) -> Iterator[str]:
    confusion: dict[tuple[str, str], int] = {}
    for row, result in zip(rows, results, strict=True):
        if row.sentiment:
            key = (row.sentiment, result.sentiment_label or "neutral")
            confusion[key] = confusion.get(key, 0) + 1
    labelled = sum(confusion.values())
    if not labelled:
        return
    gold_labels = [label for label in LABELS if any(g == label for g, _ in confusion)]
    correct = sum(confusion.get((label, label), 0) for label in LABELS)
    yield (
        f"sentiment: {correct / labelled:.1%} accurate on {labelled} labelled rows,"
        f" macro F1 {macro_f1(confusion, gold_labels):.3f}"
        f" (over {', '.join(gold_labels)})"
    )
    yield "  gold \\ predicted: " + " ".join(f"{label:>9}" for label in LABELS)
    for gold in gold_labels:
        counts = " ".join(f"{confusion.get((gold, guess), 0):>9}" for guess in LABELS)
        yield f"  {gold:>17}: {counts}"


def topic_lines(rows: list[Row], results: list[TextAnalysis]) -> Iterator[str]:
    """Report per-topic precision and recall on the rows with a mapped topic."""
    pairs = [(row, result) for row, result in zip(rows, results) if row.topic]
    if not pairs:
        return
    slugs = sorted({row.topic for row, _ in pairs})
    top_hits = sum(
        1 for row, result in pairs if result.topic_ids[:1] == (TOPIC_IDS[row.topic],)
    )
    yield (
        f"topics on {len(pairs)} rows with a mapped topic:"
        f" first topic right in {top_hits / len(pairs):.1%}"
    )
    for slug in slugs:
        topic_id = TOPIC_IDS[slug]
        predicted = [row for row, result in pairs if topic_id in result.topic_ids]
        actual = sum(1 for row, _ in pairs if row.topic == slug)
        right = sum(1 for row in predicted if row.topic == slug)
        precision = right / len(predicted) if predicted else 0.0
        yield (
            f"  {slug}: precision {precision:.1%} ({right}/{len(predicted)}),"
            f" recall {right / actual:.1%} ({right}/{actual})"
        )


def report_half(
    analyzer: Analyzer, data_set: DataSet, half: str, rows: list[Row]
) -> Iterator[str]:
    results = analyzer.analyze_many((row.text, "") for row in rows)
    detected = sum(1 for result in results if result.language == data_set.language)
    undecided = sum(1 for result in results if not result.language)
    yield f"{data_set.name}, {half} half: n = {len(rows)}"
    yield (
        f"language: {detected / len(rows):.1%} detected as {data_set.language},"
        f" {undecided / len(rows):.1%} undecided"
    )
    yield from sentiment_lines(rows, results)
    yield from topic_lines(rows, results)


def measure_throughput(analyzer: Analyzer, texts: list[str]) -> tuple[float, float]:
    """Return texts per second on a cold cache and on a warm one, one thread.

    The cold figure is the first pass of a new analyzer. The warm figure is
    the best of three later passes, so that other load on the machine counts
    less.
    """
    rates = []
    for _ in range(4):
        started = time.perf_counter()
        analyzer.analyze_many((text, "") for text in texts)
        rates.append(len(texts) / (time.perf_counter() - started))
    return rates[0], max(rates[1:])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPOSITORY.parent / "shared" / "data",
        help="folder with the labelled CSV files (default: ../shared/data)",
    )
    args = parser.parse_args()

    print(f"Python {platform.python_version()}, CPU {cpu_model()}")
    all_texts: list[str] = []
    for data_set in DATA_SETS:
        path = args.data / data_set.file
        if not path.is_file():
            print(f"\n{data_set.name}: skipped, {path} not found")
            continue
        even, odd = read_halves(path, data_set)
        all_texts += [row.text for row in even + odd]
        print(f"\n## {data_set.name} ({data_set.language}, {data_set.label_source})")
        for half, rows in (("even (dev)", even), ("odd (held-out)", odd)):
            print()
            for line in report_half(build_analyzer(), data_set, half, rows):
                print(line)

    if not all_texts:
        sys.exit(f"no data set found in {args.data}: pass --data DIR")
    print("\n## Throughput, one thread, every text of the sets above")
    mean_length = sum(map(len, all_texts)) / len(all_texts)
    cold, warm = measure_throughput(build_analyzer(), all_texts)
    print(f"{len(all_texts)} texts, mean {mean_length:.0f} characters")
    print(f"cold cache: {cold:,.0f} texts/s; warm cache: {warm:,.0f} texts/s")
    short = [text[:100] for text in all_texts if len(text) >= 100]
    cold, warm = measure_throughput(build_analyzer(), short)
    print(f"{len(short)} texts cut to 100 characters:")
    print(f"cold cache: {cold:,.0f} texts/s; warm cache: {warm:,.0f} texts/s")


if __name__ == "__main__":
    main()
