"""Write benchmark feedback files built from real labelled texts and scores.

Cycles through the real review and survey sets in the shared data folder and
writes N rows in two CSV files, one per kind, because ``import_feedback``
takes one ``--kind`` per file:

- ``bench/out/feedback_<N>_rating.csv``: star ratings (1-5) with their review
  text, from the Indonesian, English and Portuguese review sets, interleaved.
- ``bench/out/feedback_<N>_nps.csv``: NPS answers (0-10) with their verbatim,
  from the telecom NPS survey.

Every row has a unique external id. Customer ids follow a skewed
distribution, so about ``--customers-per-row`` times N distinct customers
appear and some of them many times. Touchpoints are drawn from a fixed list
and ``occurred_at`` spreads over the two years before ``--end``. The seed
makes the files identical between runs.

    .venv/bin/python bench/make_data.py --rows 1000000 [--nps-share 0.5]
"""

import argparse
import csv
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
OUT = REPOSITORY / "bench" / "out"
DEFAULT_DATA = REPOSITORY.parent / "shared" / "data"

TOUCHPOINTS = ("app", "website", "checkout", "delivery", "store", "call-center")
COLUMNS = (
    "external_id",
    "customer",
    "email",
    "score",
    "comment",
    "occurred_at",
    "touchpoint",
    "product",
)

csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class Sample:
    text: str
    score: int


# (file, text columns joined by a newline, score column)
RATING_SETS = (
    ("prdect_id_tokopedia_reviews.csv", ("Customer Review",), "Customer Rating"),
    ("tokopedia_product_reviews_2019.csv", ("text",), "rating"),
    ("shopee_app_reviews_relevant_2025.csv", ("review",), "rating"),
    ("shopee_app_reviews_newest_2025.csv", ("content",), "score"),
    ("womens_clothing_ecommerce_reviews.csv", ("Title", "Review Text"), "Rating"),
    ("olist_classified_reviews_pt.csv", ("review_comment_message",), "review_score"),
)
NPS_SETS = (("nps_telecom_verbatims_2018.csv", ("text",), "NPS_SCORE"),)


def read_samples(path: Path, text_columns: tuple[str, ...], score_column: str) -> list[Sample]:
    """Read the rows of one set that have a whole-number score."""
    samples = []
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            value = (row.get(score_column) or "").strip()
            if not value.isdigit():
                continue
            parts = [(row.get(column) or "").strip() for column in text_columns]
            samples.append(Sample("\n".join(part for part in parts if part), int(value)))
    return samples


def interleave(sets: list[list[Sample]]) -> list[Sample]:
    """Merge sets round-robin, so every stretch of the file mixes languages."""
    merged = []
    longest = max(len(samples) for samples in sets)
    for index in range(longest):
        for samples in sets:
            if index < len(samples):
                merged.append(samples[index])
    return merged


def generate_rows(
    samples: list[Sample],
    *,
    count: int,
    prefix: str,
    rng: random.Random,
    customers: int,
    end: datetime,
) -> Iterator[tuple]:
    span_seconds = int(timedelta(days=730).total_seconds())
    start = end - timedelta(days=730)
    for index in range(count):
        sample = samples[index % len(samples)]
        # Two thirds of the rows come from any customer, the rest from the
        # most active tenth, so repeat customers are common.
        if rng.random() < 0.67:
            customer = rng.randrange(customers)
        else:
            customer = rng.randrange(max(1, customers // 10))
        occurred_at = start + timedelta(seconds=rng.randrange(span_seconds))
        yield (
            f"{prefix}-{index}",
            f"cust-{customer}",
            f"cust-{customer}@example.com",
            sample.score,
            sample.text,
            occurred_at.isoformat(timespec="seconds"),
            rng.choice(TOUCHPOINTS),
            f"sku-{rng.randrange(500)}",
        )


def write_csv(path: Path, rows: Iterator[tuple]) -> tuple[int, set[str]]:
    """Write the rows and return the row count and the customer ids seen."""
    seen: set[str] = set()
    written = 0
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(row)
            seen.add(row[1])
            written += 1
    return written, seen


def make_files(
    *,
    rows: int,
    data: Path,
    nps_share: float = 0.5,
    customers_per_row: float = 0.21,
    seed: int = 7,
    end: datetime | None = None,
    out: Path = OUT,
) -> dict[str, Path]:
    """Write the rating and NPS files for ``rows`` rows; return them by kind.

    A kind whose share is 0 gets no file.
    """
    end = end or datetime(2026, 11, 30, tzinfo=UTC)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    customers = max(1, int(rows * customers_per_row))
    nps_rows = round(rows * nps_share)
    plan = {
        "rating": (RATING_SETS, rows - nps_rows, "r"),
        "nps": (NPS_SETS, nps_rows, "n"),
    }

    files: dict[str, Path] = {}
    all_customers: set[str] = set()
    for kind, (sets, count, prefix) in plan.items():
        if count == 0:
            continue
        samples = interleave([read_samples(data / name, texts, score) for name, texts, score in sets])
        path = out / f"feedback_{rows}_{kind}.csv"
        written, seen = write_csv(
            path,
            generate_rows(
                samples, count=count, prefix=prefix, rng=rng, customers=customers, end=end
            ),
        )
        all_customers |= seen
        files[kind] = path
        print(
            f"{path.relative_to(REPOSITORY)}: {written:,} {kind} rows from "
            f"{len(samples):,} real texts, {len(seen):,} customers",
            file=sys.stderr,
        )
    print(f"distinct customers over both files: {len(all_customers):,}", file=sys.stderr)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="Rows over both files.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Folder of the real data sets.")
    parser.add_argument("--nps-share", type=float, default=0.5, help="Fraction of rows in the NPS file.")
    parser.add_argument(
        "--customers-per-row", type=float, default=0.21,
        help="Customer id pool size as a fraction of --rows.",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    make_files(
        rows=args.rows,
        data=args.data,
        nps_share=args.nps_share,
        customers_per_row=args.customers_per_row,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
