"""Cut the bundled demo sample from the real data sets.

Run from the repository root with the data folder beside the repository:
    python sample/make_sample.py ../shared/data

Only sets whose licence allows redistribution are used (see sample/README.md).
Neither source records when a review was written, so each row gets an
occurrence time spread evenly over the 13 weeks before SAMPLE_END; the dates
are for the demo's time charts and carry no meaning.
"""

import csv
import sys
from datetime import datetime, timedelta
from pathlib import Path

SAMPLE_END = datetime(2026, 11, 30, 18, 0)
SPAN = timedelta(weeks=13)
OUT = Path(__file__).resolve().parent
COLUMNS = ["external_id", "score", "comment", "product", "touchpoint", "language", "occurred_at"]


def spread(position: int, count: int) -> str:
    moment = SAMPLE_END - SPAN + SPAN * position / count
    return moment.replace(microsecond=0).isoformat()


def every_kth(rows: list[dict], wanted: int) -> list[dict]:
    step = max(1, len(rows) // wanted)
    return rows[::step][:wanted]


def write(name: str, rows: list[dict]) -> None:
    with open(OUT / name, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{name}: {len(rows)} rows")


def main(data: Path) -> None:
    with open(data / "prdect_id_tokopedia_reviews.csv", encoding="utf-8", newline="") as handle:
        prdect = every_kth(list(csv.DictReader(handle)), 600)
    write(
        "tokopedia_reviews_id.csv",
        [
            {
                "external_id": f"prdect-{row['row_id']}",
                "score": row["Customer Rating"],
                "comment": row["Customer Review"],
                "product": row["Product Name"][:200],
                "touchpoint": "product",
                "language": "id",
                "occurred_at": spread(position, len(prdect)),
            }
            for position, row in enumerate(prdect)
        ],
    )

    with open(data / "womens_clothing_ecommerce_reviews.csv", encoding="utf-8", newline="") as handle:
        clothing = every_kth(list(csv.DictReader(handle)), 900)
    write(
        "clothing_reviews_en.csv",
        [
            {
                "external_id": f"clothing-{row['row_no']}",
                "score": row["Rating"],
                "comment": "\n".join(
                    part.strip() for part in (row["Title"], row["Review Text"]) if part.strip()
                ),
                "product": f"{row['Department Name']} {row['Clothing ID']}".strip(),
                "touchpoint": "product",
                "language": "en",
                "occurred_at": spread(position, len(clothing)),
            }
            for position, row in enumerate(clothing)
        ],
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
