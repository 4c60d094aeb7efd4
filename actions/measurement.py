"""Before/after comparison of a metric with a significance test, from counts.

Every function takes counts per score (score -> number of responses), as
``feedback.metrics`` does, and nothing here touches the database. The test
fits the metric:

- NPS: a two-sample z-test on the difference of the two NPS values. Each
  response is +1 (promoter, 9-10), 0 (passive) or -1 (detractor), so the NPS
  of a side is the mean of a multinomial variable with variance
  ``p_P + p_D - (p_P - p_D)^2``. The standard error of the difference is
  ``sqrt(var_before / n_before + var_after / n_after)``, and
  ``z = (NPS_after - NPS_before) / se``.
- CSAT: a two-proportion z-test on the top-2-box share (4-5) with the pooled
  proportion ``p = (x_before + x_after) / (n_before + n_after)`` and
  ``se = sqrt(p (1 - p) (1 / n_before + 1 / n_after))``.
- CES and star ratings: Welch's t-test on the means with sample variances
  (n - 1 in the denominator) and Welch-Satterthwaite degrees of freedom.

p-values are two-sided. The verdict is ``improved`` when p < ALPHA and the
metric rose (for every kind, higher is better: CES 7 means very easy),
``worse`` when p < ALPHA and it fell, ``no_change`` otherwise, and
``not_enough_data`` when either side has fewer than MIN_N_PER_SIDE
responses, because the normal approximations behind the z-tests are poor
below that.
"""

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

from feedback.metrics import SCORE_RANGES, metric_summary_from_counts, validate_counts

ALPHA = 0.05
MIN_N_PER_SIDE = 30

IMPROVED = "improved"
NO_CHANGE = "no_change"
WORSE = "worse"
NOT_ENOUGH_DATA = "not_enough_data"

TEST_DESCRIPTIONS = {
    "nps": (
        "two-sample z-test on the NPS difference; each side's variance is "
        "(p_P + p_D - (p_P - p_D)^2) / n, se = sqrt(var_before + var_after)"
    ),
    "csat": (
        "two-proportion z-test on the top-2-box share (4-5) with the pooled "
        "proportion, se = sqrt(p (1 - p) (1/n_before + 1/n_after))"
    ),
    "ces": "Welch's t-test on the mean score, Welch-Satterthwaite degrees of freedom",
    "rating": "Welch's t-test on the mean star rating, Welch-Satterthwaite degrees of freedom",
}

_NORMAL = NormalDist()


def normal_two_sided_p(z: float) -> float:
    """Return the two-sided p-value of a standard normal statistic."""
    return 2.0 * (1.0 - _NORMAL.cdf(abs(z)))


def _continued_fraction_beta(a: float, b: float, x: float) -> float:
    """Evaluate the continued fraction of the incomplete beta function.

    Modified Lentz's method; converges fast for x < (a + 1) / (a + b + 2),
    which the caller ensures by using the symmetry I_x(a, b) = 1 - I_1-x(b, a).
    """
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        # Even step of the fraction.
        numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / c
        c = c if abs(c) > tiny else tiny
        result *= d * c
        # Odd step.
        numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        result *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return result


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """Return I_x(a, b), the CDF of the Beta(a, b) distribution at x."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _continued_fraction_beta(a, b, x) / a
    return 1.0 - front * _continued_fraction_beta(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """Return the two-sided p-value of Student's t with ``df`` degrees of freedom.

    P(|T| > |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2); ``df`` may be fractional,
    as Welch's test gives.
    """
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def _side(kind: str, counts: Mapping[int, int]) -> dict[str, Any]:
    summary = metric_summary_from_counts(kind=kind, counts=counts)
    summary["counts"] = {str(score): count for score, count in sorted(counts.items()) if count}
    return summary


def _mean_and_variance(counts: Mapping[int, int]) -> tuple[int, float, float]:
    n = sum(counts.values())
    total = sum(score * count for score, count in counts.items())
    squares = sum(score * score * count for score, count in counts.items())
    mean = total / n
    # Integer numerator, as in feedback.metrics, so large n loses no precision.
    variance = (n * squares - total * total) / (n * (n - 1))
    return n, mean, variance


def _nps_test(before: Mapping[int, int], after: Mapping[int, int]) -> dict[str, Any]:
    def proportions(counts: Mapping[int, int]) -> tuple[int, float, float]:
        n = sum(counts.values())
        promoters = sum(c for score, c in counts.items() if score >= 9)
        detractors = sum(c for score, c in counts.items() if score <= 6)
        return n, promoters / n, detractors / n

    n_before, promoters_before, detractors_before = proportions(before)
    n_after, promoters_after, detractors_after = proportions(after)
    nps_before = promoters_before - detractors_before
    nps_after = promoters_after - detractors_after
    variance_before = promoters_before + detractors_before - nps_before**2
    variance_after = promoters_after + detractors_after - nps_after**2
    se = math.sqrt(variance_before / n_before + variance_after / n_after)
    difference = nps_after - nps_before
    return _z_result(difference=difference * 100, se=se * 100)


def _top_2_box_test(before: Mapping[int, int], after: Mapping[int, int]) -> dict[str, Any]:
    n_before = sum(before.values())
    n_after = sum(after.values())
    hits_before = sum(c for score, c in before.items() if score >= 4)
    hits_after = sum(c for score, c in after.items() if score >= 4)
    pooled = (hits_before + hits_after) / (n_before + n_after)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_before + 1 / n_after))
    difference = hits_after / n_after - hits_before / n_before
    result = _z_result(difference=difference * 100, se=se * 100)
    # The pooled se tests the null hypothesis; the margin of the difference
    # itself uses the unpooled (Wald) se.
    p_before = hits_before / n_before
    p_after = hits_after / n_after
    unpooled = math.sqrt(p_before * (1 - p_before) / n_before + p_after * (1 - p_after) / n_after)
    result["difference_margin"] = round(1.96 * unpooled * 100, 1)
    return result


def _z_result(*, difference: float, se: float) -> dict[str, Any]:
    if se == 0:
        # Both sides are constant: equal means no evidence of change, unequal
        # means every response moved, which no sampling noise can explain.
        z = None
        p_value = 1.0 if difference == 0 else 0.0
    else:
        z = difference / se
        p_value = normal_two_sided_p(z)
    return {
        "raw_difference": difference,
        "difference": round(difference, 1),
        "difference_margin": round(1.96 * se, 1),
        "statistic": "z",
        "z": None if z is None else round(z, 4),
        "p_value": p_value,
    }


def _welch_test(before: Mapping[int, int], after: Mapping[int, int]) -> dict[str, Any]:
    n_before, mean_before, var_before = _mean_and_variance(before)
    n_after, mean_after, var_after = _mean_and_variance(after)
    se_squared = var_before / n_before + var_after / n_after
    difference = mean_after - mean_before
    if se_squared == 0:
        t = df = None
        p_value = 1.0 if difference == 0 else 0.0
        margin = 0.0
    else:
        se = math.sqrt(se_squared)
        t = difference / se
        df = se_squared**2 / (
            (var_before / n_before) ** 2 / (n_before - 1)
            + (var_after / n_after) ** 2 / (n_after - 1)
        )
        p_value = t_two_sided_p(t, df)
        margin = 1.96 * se
    return {
        "raw_difference": difference,
        "difference": round(difference, 2),
        "difference_margin": round(margin, 2),
        "statistic": "t",
        "t": None if t is None else round(t, 4),
        "df": None if df is None else round(df, 2),
        "p_value": p_value,
    }


def verdict_from(*, difference: float, p_value: float, alpha: float = ALPHA) -> str:
    """Return improved, worse or no_change from a tested difference."""
    if p_value < alpha and difference > 0:
        return IMPROVED
    if p_value < alpha and difference < 0:
        return WORSE
    return NO_CHANGE


def compare_before_after(
    *,
    kind: str,
    before: Mapping[int, int],
    after: Mapping[int, int],
    min_n: int = MIN_N_PER_SIDE,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Compare the metric ``kind`` between two sets of counts per score.

    Returns ``before`` and ``after`` summaries (n, score, margin and the
    counts, as ``feedback.metrics`` computes them), the test and its
    numbers (difference after minus before in the score's unit, its 95%
    margin, z or t, p_value) and the ``verdict``. When either side has fewer
    than ``min_n`` responses no test runs and the verdict is not_enough_data.
    """
    if kind not in SCORE_RANGES:
        raise ValueError(f"kind {kind!r} has no score to compare: use one of {', '.join(SCORE_RANGES)}")
    validate_counts(kind=kind, counts=before)
    validate_counts(kind=kind, counts=after)
    result: dict[str, Any] = {
        "kind": kind,
        "test": TEST_DESCRIPTIONS[kind],
        "alpha": alpha,
        "min_n_per_side": min_n,
        "before": _side(kind, before),
        "after": _side(kind, after),
    }
    n_before = result["before"]["n"]
    n_after = result["after"]["n"]
    if n_before < min_n or n_after < min_n:
        result["verdict"] = NOT_ENOUGH_DATA
        result["reason"] = (
            f"{n_before} responses before and {n_after} after; the test needs "
            f"at least {min_n} on each side"
        )
        return result

    if kind == "nps":
        test = _nps_test(before, after)
    elif kind == "csat":
        test = _top_2_box_test(before, after)
    else:
        test = _welch_test(before, after)
    # The verdict reads the unrounded difference, so a tiny significant change
    # that rounds to 0 is still called by its sign.
    raw_difference = test.pop("raw_difference")
    result.update(test)
    result["verdict"] = verdict_from(difference=raw_difference, p_value=test["p_value"], alpha=alpha)
    result["reason"] = (
        f"difference {test['difference']:+g} with p = {test['p_value']:.4f} "
        f"({'below' if test['p_value'] < alpha else 'not below'} {alpha})"
    )
    return result
