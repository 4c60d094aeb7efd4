import math
import statistics
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedback.metrics import (
    SCORE_RANGES,
    ces_summary,
    metric_summary_from_counts,
    nps_summary,
    t_critical_95,
    top_2_box_summary,
)
from feedback.models import Feedback

# A rounded output is within half a unit of its last digit from the exact
# value. The extra 1e-9 absorbs float noise at the rounding boundary.
PERCENT_TOLERANCE = 0.05 + 1e-9
MEAN_TOLERANCE = 0.005 + 1e-9


def t_two_sided_coverage(t: float, df: int) -> float:
    """Return P(|T| <= t) for Student's t with integer ``df``.

    For integer degrees of freedom the distribution has a closed form, a
    finite series in cos(theta) with theta = atan(t / sqrt(df)), which checks
    the critical values independently of how metrics.py finds them.
    """
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df == 1:
        return 2 * theta / math.pi
    term = total = 1.0
    if df % 2 == 1:
        for k in range(1, (df - 3) // 2 + 1):
            term *= 2 * k / (2 * k + 1) * cos2
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    for k in range(1, (df - 2) // 2 + 1):
        term *= (2 * k - 1) / (2 * k) * cos2
        total += term
    return math.sin(theta) * total


def nps_value(score: int) -> int:
    if score >= 9:
        return 1
    if score <= 6:
        return -1
    return 0


def exact_t_critical_95(df: int) -> float:
    low, high = 1.0, 20.0
    for _ in range(100):
        middle = (low + high) / 2
        if t_two_sided_coverage(middle, df) < 0.95:
            low = middle
        else:
            high = middle
    return low


def expected_mean_margin(scores: list[int]) -> float:
    return (
        t_critical_95(df=len(scores) - 1)
        * statistics.stdev(scores)
        / math.sqrt(len(scores))
    )


def test_score_ranges_match_model():
    # metrics.py stays free of the ORM, so it keeps its own copy of the ranges.
    model_ranges = {str(kind): bounds for kind, bounds in Feedback.SCORE_RANGES.items()}
    assert SCORE_RANGES == model_ranges


# Edge cases.


@pytest.mark.parametrize("kind", ["nps", "csat", "ces", "rating"])
def test_summary_empty_gives_none(kind):
    summary = metric_summary_from_counts(kind=kind, counts={})
    assert summary["kind"] == kind
    assert summary["n"] == 0
    assert summary["score"] is None
    assert summary["margin"] is None


@pytest.mark.parametrize("kind", ["nps", "csat", "ces", "rating"])
def test_summary_zero_counts_are_empty(kind):
    summary = metric_summary_from_counts(kind=kind, counts={5: 0})
    assert summary["n"] == 0
    assert summary["score"] is None


@pytest.mark.parametrize(
    ("kind", "score", "expected"),
    [("nps", 10, 100.0), ("nps", 7, 0.0), ("nps", 3, -100.0), ("csat", 4, 100.0)],
)
def test_summary_single_response_has_no_margin(kind, score, expected):
    summary = metric_summary_from_counts(kind=kind, counts={score: 1})
    assert summary["n"] == 1
    assert summary["score"] == expected
    assert summary["margin"] is None


def test_ces_single_response_has_mean_only():
    summary = ces_summary(counts={6: 1})
    assert summary["score"] == 6.0
    assert summary["mean"] == 6.0
    assert summary["sd"] is None
    assert summary["margin"] is None


def test_nps_all_promoters():
    summary = nps_summary(counts={9: 3, 10: 7})
    assert summary["score"] == 100.0
    assert summary["margin"] == 0.0
    assert summary["promoters"] == 10
    assert summary["passives"] == 0
    assert summary["detractors"] == 0


def test_nps_all_detractors():
    summary = nps_summary(counts={0: 4, 6: 6})
    assert summary["score"] == -100.0
    assert summary["margin"] == 0.0
    assert summary["detractors"] == 10


def test_nps_worked_example():
    # 50 promoters, 30 passives, 20 detractors: NPS 30, variance 0.7 - 0.09.
    summary = nps_summary(counts={10: 50, 8: 30, 2: 20})
    assert summary["score"] == 30.0
    assert summary["margin"] == round(1.96 * math.sqrt(0.61 / 100) * 100, 1)
    assert summary["margin"] == 15.3


def test_csat_worked_example():
    # 8 of 10 responses are 4 or 5; mean (5*5 + 4*3 + 3 + 1) / 10 = 4.1.
    summary = top_2_box_summary(kind="csat", counts={5: 5, 4: 3, 3: 1, 1: 1})
    assert summary["score"] == 80.0
    assert summary["margin"] == round(1.96 * math.sqrt(0.8 * 0.2 / 10) * 100, 1)
    assert summary["satisfied"] == 8
    assert summary["neutral"] == 1
    assert summary["dissatisfied"] == 1
    assert summary["mean"] == 4.1


def test_ces_constant_responses_zero_margin():
    summary = ces_summary(counts={7: 12})
    assert summary["score"] == 7.0
    assert summary["sd"] == 0.0
    assert summary["margin"] == 0.0


@pytest.mark.parametrize(
    ("kind", "counts"),
    [("nps", {11: 1}), ("csat", {0: 1}), ("ces", {8: 1}), ("rating", {6: 2})],
)
def test_summary_rejects_out_of_range_score(kind, counts):
    with pytest.raises(ValueError, match="outside"):
        metric_summary_from_counts(kind=kind, counts=counts)


def test_summary_rejects_negative_count():
    with pytest.raises(ValueError, match="negative count"):
        nps_summary(counts={9: -1})


def test_summary_rejects_text_kind():
    with pytest.raises(ValueError, match="'text'"):
        metric_summary_from_counts(kind="text", counts={})


# Student's t critical values.


@pytest.mark.parametrize("df", range(1, 31))
def test_t_critical_95_table_is_exact(df):
    # The table keeps four decimals, so it is within half of 1e-4.
    assert t_critical_95(df=df) == pytest.approx(exact_t_critical_95(df), abs=5e-5)


@pytest.mark.parametrize("df", [31, 32, 40, 60, 100, 250, 1000])
def test_t_critical_95_expansion_is_exact(df):
    assert t_critical_95(df=df) == pytest.approx(exact_t_critical_95(df), abs=1e-6)


@pytest.mark.parametrize(
    ("df", "published"), [(1, 12.706), (10, 2.228), (30, 2.042), (120, 1.980)]
)
def test_t_critical_95_matches_t_table(df, published):
    assert t_critical_95(df=df) == pytest.approx(published, abs=5e-4)


def test_t_critical_95_rejects_zero_df():
    with pytest.raises(ValueError, match="at least 1"):
        t_critical_95(df=0)


# Property tests against a direct computation from the list of scores.


@given(st.lists(st.integers(min_value=0, max_value=10), max_size=400))
def test_nps_matches_direct_computation(scores):
    summary = nps_summary(counts=Counter(scores))
    n = len(scores)
    assert summary["n"] == n
    assert summary["promoters"] + summary["passives"] + summary["detractors"] == n
    if n == 0:
        assert summary["score"] is None
        return
    # NPS as the mean of +1 (9-10), 0 (7-8) and -1 (0-6), times 100.
    values = [nps_value(score) for score in scores]
    expected_score = statistics.fmean(values) * 100
    assert summary["score"] == pytest.approx(expected_score, abs=PERCENT_TOLERANCE)
    if n == 1:
        assert summary["margin"] is None
        return
    # pvariance of the +1/0/-1 values equals p_P + p_D - (p_P - p_D)^2.
    expected_margin = 1.96 * math.sqrt(statistics.pvariance(values) / n) * 100
    assert summary["margin"] == pytest.approx(expected_margin, abs=PERCENT_TOLERANCE)


@given(
    st.sampled_from(["csat", "rating"]),
    st.lists(st.integers(min_value=1, max_value=5), max_size=400),
)
def test_top_2_box_matches_direct_computation(kind, scores):
    summary = top_2_box_summary(kind=kind, counts=Counter(scores))
    n = len(scores)
    assert summary["n"] == n
    assert summary["satisfied"] + summary["neutral"] + summary["dissatisfied"] == n
    assert summary["dissatisfied"] == sum(1 for s in scores if s <= 2)
    if n == 0:
        assert summary["score"] is None
        assert summary["mean"] is None
        return
    share = sum(1 for s in scores if s >= 4) / n
    assert summary["score"] == pytest.approx(share * 100, abs=PERCENT_TOLERANCE)
    assert summary["mean"] == pytest.approx(
        statistics.fmean(scores), abs=MEAN_TOLERANCE
    )
    if n == 1:
        assert summary["margin"] is None
        assert summary["mean_margin"] is None
        return
    expected_margin = 1.96 * math.sqrt(share * (1 - share) / n) * 100
    assert summary["margin"] == pytest.approx(expected_margin, abs=PERCENT_TOLERANCE)
    assert summary["sd"] == pytest.approx(statistics.stdev(scores), abs=MEAN_TOLERANCE)
    assert summary["mean_margin"] == pytest.approx(
        expected_mean_margin(scores), abs=MEAN_TOLERANCE
    )


@given(st.lists(st.integers(min_value=1, max_value=7), max_size=400))
def test_ces_matches_direct_computation(scores):
    summary = ces_summary(counts=Counter(scores))
    n = len(scores)
    assert summary["n"] == n
    if n == 0:
        assert summary["score"] is None
        assert summary["sd"] is None
        return
    assert summary["score"] == pytest.approx(
        statistics.fmean(scores), abs=MEAN_TOLERANCE
    )
    assert summary["mean"] == summary["score"]
    if n == 1:
        assert summary["margin"] is None
        return
    assert summary["sd"] == pytest.approx(statistics.stdev(scores), abs=MEAN_TOLERANCE)
    assert summary["margin"] == pytest.approx(
        expected_mean_margin(scores), abs=MEAN_TOLERANCE
    )
