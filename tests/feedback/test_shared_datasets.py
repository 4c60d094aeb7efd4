"""Whole real data sets go through import_feedback with the counts of the file.

Each expected count comes from reading the file directly with the csv module:
rows, distinct ids, and rows whose score is not a whole number in range or
that have neither score nor comment.
"""

import csv
from io import StringIO

import pytest
from django.core.management import call_command

from feedback.models import Feedback

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.shared_data]

# file, kind, source, id column, score column, comment columns, extra options
DATASETS = [
    ("airline_tweets_us_2015.csv", "text", "social", "tweet_id", None, ["text"],
     ["--map", "occurred_at=tweet_created", "--date-format", "%Y-%m-%d %H:%M:%S %z"]),
    ("nps_telecom_verbatims_2018.csv", "nps", "survey", "row_id", "NPS_SCORE", ["text"],
     ["--map", "occurred_at=CUSTOMER_RESPONSE_DATE", "--date-format", "%d/%m/%Y %H:%M",
      "--map", "touchpoint=SURVEY_SUB_TYPE"]),
    ("olist_classified_reviews_pt.csv", "rating", "review", "id", "review_score",
     ["review_comment_message"], ["--map", "occurred_at=review_answer_timestamp"]),
    ("olist_sample/olist_order_reviews_dataset.csv", "rating", "review", "review_id",
     "review_score", ["review_comment_title", "review_comment_message"],
     ["--map", "occurred_at=review_answer_timestamp"]),
    ("prdect_id_tokopedia_reviews.csv", "rating", "review", "row_id", "Customer Rating",
     ["Customer Review"], []),
    ("tokopedia_product_reviews_2019.csv", "rating", "review", "row_no", "rating", ["text"],
     ["--map", "product=product_name"]),
    ("shopee_app_reviews_relevant_2025.csv", "rating", "review", "row_id", "rating",
     ["review"], ["--map", "occurred_at=date"]),
    ("shopee_app_reviews_newest_2025.csv", "rating", "review", "row_id", "score",
     ["content"], ["--map", "occurred_at=at", "--map", "customer=user_ref"]),
    ("womens_clothing_ecommerce_reviews.csv", "rating", "review", "row_no", "Rating",
     ["Title", "Review Text"], []),
]
RANGES = {"nps": range(0, 11), "rating": range(1, 6), "text": None}


def direct_counts(path, kind, id_column, score_column, comment_columns):
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    seen, imported, duplicates, rejected = set(), 0, 0, 0
    for row in rows:
        score = (row[score_column].strip() if score_column else "")
        comment = "".join(row[column].strip() for column in comment_columns)
        bad_score = score != "" and not (score.isdigit() and int(score) in RANGES[kind])
        if bad_score or (score == "" and comment == ""):
            rejected += 1
        elif row[id_column] in seen:
            duplicates += 1
        else:
            seen.add(row[id_column])
            imported += 1
    return imported, duplicates, rejected


@pytest.mark.parametrize("spec", DATASETS, ids=[spec[0] for spec in DATASETS])
def test_whole_dataset_import_matches_direct_count(spec, shared_data, tmp_path):
    name, kind, source, id_column, score_column, comments, extra = spec
    original = shared_data / name
    # The data folder is read-only, so the rejected-row report needs a copy.
    path = tmp_path / original.name
    path.write_bytes(original.read_bytes())
    args = ["--map", f"external_id={id_column}", "--map", f"comment={'+'.join(comments)}"]
    if score_column:
        args += ["--map", f"score={score_column}"]

    out = StringIO()
    call_command(
        "import_feedback", str(path), "--source", source, "--kind", kind, *args, *extra,
        "--no-progress", stdout=out, stderr=StringIO(),
    )

    imported, duplicates, rejected = direct_counts(path, kind, id_column, score_column, comments)
    assert out.getvalue().strip() == (
        f"imported {imported}, duplicates {duplicates}, rejected {rejected}"
    )
    assert Feedback.objects.filter(source=source).count() == imported
