"""The before/after statistics, checked against direct computations on the
expanded responses and on known values of the t and normal distributions."""

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actions import measurement
from actions.measurement import compare_before_after, t_two_sided_p


def counts_strategy(low: int, high: int, *, min_total: int = 30):
    return st.dictionaries(
        st.integers(low, high), st.integers(0, 400), min_size=2, max_size=high - low + 1
    ).filter(lambda counts: sum(counts.values()) >= min_total)


def expand(counts: dict[int, int]) -> list[int]:
    return [score for score, count in counts.items() for _ in range(count)]


def t_p_by_integration(t: float, df: float) -> float:
    """Two-sided p of Student's t by Simpson's rule on the density, a check
    independent of the incomplete beta function."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x: float) -> float:
        return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))

    upper = abs(t)
    steps = 20000
    width = upper / steps
    area = density(0) + density(upper)
    for i in range(1, steps):
        area += density(i * width) * (4 if i % 2 else 2)
    return 1 - 2 * area * width / 3


@pytest.mark.parametrize(
    "t, df, expected",
    [
        (2.0, 10, 0.073388),
        (12.7062, 1, 0.05),
        (2.0423, 30, 0.05),
        (1.0, 5, 0.363217),
        (0.0, 7, 1.0),
    ],
)
def test_t_p_value_known_values(t, df, expected):
    assert t_two_sided_p(t, df) == pytest.approx(expected, abs=2e-5)


@given(t=st.floats(0, 8), df=st.floats(1, 500))
@settings(max_examples=60, deadline=None)
def test_t_p_value_matches_integration(t, df):
    assert t_two_sided_p(t, df) == pytest.approx(t_p_by_integration(t, df), abs=1e-6)


@given(before=counts_strategy(0, 10), after=counts_strategy(0, 10))
@settings(max_examples=80, deadline=None)
def test_nps_z_matches_direct(before, after):
    result = compare_before_after(kind="nps", before=before, after=after)

    def values(counts):
        return [1 if s >= 9 else -1 if s <= 6 else 0 for s in expand(counts)]

    b, a = values(before), values(after)
    difference = statistics.fmean(a) - statistics.fmean(b)
    # The multinomial variance p_P + p_D - (p_P - p_D)^2 is the population
    # variance of the +1/0/-1 values.
    se = math.sqrt(statistics.pvariance(b) / len(b) + statistics.pvariance(a) / len(a))
    assert result["difference"] == pytest.approx(round(difference * 100, 1), abs=0.051)
    if se > 0:
        p = 2 * (1 - statistics.NormalDist().cdf(abs(difference / se)))
        assert result["p_value"] == pytest.approx(p, abs=1e-9)


@given(before=counts_strategy(1, 5), after=counts_strategy(1, 5))
@settings(max_examples=80, deadline=None)
def test_csat_two_proportion_z_matches_direct(before, after):
    result = compare_before_after(kind="csat", before=before, after=after)
    b = [1 if s >= 4 else 0 for s in expand(before)]
    a = [1 if s >= 4 else 0 for s in expand(after)]
    pooled = (sum(a) + sum(b)) / (len(a) + len(b))
    se = math.sqrt(pooled * (1 - pooled) * (1 / len(a) + 1 / len(b)))
    difference = statistics.fmean(a) - statistics.fmean(b)
    if se > 0:
        p = 2 * (1 - statistics.NormalDist().cdf(abs(difference / se)))
        assert result["p_value"] == pytest.approx(p, abs=1e-9)
    else:
        assert result["p_value"] == 1.0


@given(before=counts_strategy(1, 7), after=counts_strategy(1, 7))
@settings(max_examples=60, deadline=None)
def test_ces_welch_matches_direct(before, after):
    result = compare_before_after(kind="ces", before=before, after=after)
    b, a = expand(before), expand(after)
    vb = statistics.variance(b) / len(b)
    va = statistics.variance(a) / len(a)
    difference = statistics.fmean(a) - statistics.fmean(b)
    assert result["difference"] == pytest.approx(round(difference, 2), abs=0.0051)
    if va + vb > 0:
        t = difference / math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
        assert result["t"] == pytest.approx(t, abs=1e-4)
        assert result["df"] == pytest.approx(df, abs=0.01)
        assert result["p_value"] == pytest.approx(t_p_by_integration(t, df), abs=1e-6)


@given(before=counts_strategy(0, 10), after=counts_strategy(0, 10))
@settings(max_examples=60, deadline=None)
def test_verdict_follows_p_and_sign(before, after):
    result = compare_before_after(kind="nps", before=before, after=after)
    if result["p_value"] >= 0.05:
        assert result["verdict"] == measurement.NO_CHANGE
    elif result["difference"] > 0:
        assert result["verdict"] == measurement.IMPROVED
    elif result["difference"] < 0:
        assert result["verdict"] == measurement.WORSE


def test_verdict_improved_when_nps_rises():
    result = compare_before_after(kind="nps", before={0: 50, 9: 50}, after={0: 20, 9: 80})
    assert result["verdict"] == measurement.IMPROVED
    assert result["difference"] == 60.0
    assert result["p_value"] < 0.05


def test_verdict_worse_when_ces_falls():
    result = compare_before_after(kind="ces", before={6: 40, 7: 40}, after={3: 40, 4: 40})
    assert result["verdict"] == measurement.WORSE


def test_verdict_no_change_on_same_counts():
    counts = {1: 10, 4: 20, 5: 20}
    result = compare_before_after(kind="csat", before=counts, after=counts)
    assert result["verdict"] == measurement.NO_CHANGE
    assert result["p_value"] == pytest.approx(1.0)


def test_not_enough_data_below_minimum():
    result = compare_before_after(kind="nps", before={10: 29}, after={0: 100})
    assert result["verdict"] == measurement.NOT_ENOUGH_DATA
    assert result["min_n_per_side"] == 30
    assert "p_value" not in result
    assert "29 responses before" in result["reason"]


def test_minimum_exactly_met_runs_test():
    result = compare_before_after(kind="nps", before={10: 30}, after={0: 30})
    assert result["verdict"] == measurement.WORSE
    assert result["p_value"] == 0.0


def test_rating_compares_means():
    result = compare_before_after(kind="rating", before={3: 40}, after={3: 20, 4: 20})
    assert result["statistic"] == "t"
    assert result["difference"] == 0.5


def test_text_kind_rejected():
    with pytest.raises(ValueError, match="no score"):
        compare_before_after(kind="text", before={}, after={})
