"""NPS, CSAT, CES and star-rating arithmetic on counts per score.

Every function takes ``counts``, a mapping of score to the number of
responses with that score, so the same code serves rollup rows and direct
queries. Nothing here touches the database.

Each summary is a dict with ``kind``, ``n``, ``score`` and ``margin`` plus the
counts behind the score:

- NPS: % promoters (9-10) minus % detractors (0-6), -100..100.
- CSAT and rating: top-2-box, the % of responses that are 4 or 5, with the
  mean score beside it under ``mean`` (and its margin under ``mean_margin``).
- CES (1-7, 7 = very easy): the mean score, with the sample SD under ``sd``.

``margin`` is the half-width of a 95% confidence interval, so the interval is
``score - margin`` to ``score + margin``. NPS and top-2-box margins use the
normal approximation (Wald). Margins of means use Student's t with the sample
SD (n - 1 in the denominator).

Rounding happens only on output: percentages, NPS and their margins to one
decimal, means, SDs and their margins to two decimals (Python's ``round``,
which rounds halves to even). An empty set gives ``score`` and ``margin``
None, and a set with n = 1 gives ``margin`` None because one response has no
spread to estimate.
"""

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

MetricSummary = dict[str, Any]

SCORE_RANGES: dict[str, tuple[int, int]] = {
    "nps": (0, 10),
    "csat": (1, 5),
    "ces": (1, 7),
    "rating": (1, 5),
}
METRIC_KINDS: tuple[str, ...] = tuple(SCORE_RANGES)

# The two-sided 95% normal quantile (1.95996...) rounded to 1.96, as in the
# usual NPS and CSAT margin formulas.
Z_95 = 1.96
PERCENT_DIGITS = 1
MEAN_DIGITS = 2

# Two-sided 95% critical values of Student's t for 1 to 30 degrees of freedom,
# from the standard t table (the 0.975 quantile), to four decimals.
_T_95_TABLE: tuple[float, ...] = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622,
    2.2281, 2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009,
    2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518,
    2.0484, 2.0452, 2.0423,
)  # fmt: skip


def t_critical_95(*, df: int) -> float:
    """Return the two-sided 95% critical value of Student's t for ``df``.

    Above 30 degrees of freedom the Cornish-Fisher expansion of the t quantile
    around the normal one is within 1e-6 of the exact value, which the tests
    check against the closed-form t distribution.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(_T_95_TABLE):
        return _T_95_TABLE[df - 1]
    z = NormalDist().inv_cdf(0.975)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def validate_counts(*, kind: str, counts: Mapping[int, int]) -> None:
    """Raise ValueError unless ``counts`` fits the score range of ``kind``.

    A negative count means a correction subtracted more than was recorded,
    so the rollup table is out of step with the feedback table.
    """
    if kind not in SCORE_RANGES:
        raise ValueError(
            f"unknown metric kind {kind!r}: expected one of {', '.join(METRIC_KINDS)}"
        )
    low, high = SCORE_RANGES[kind]
    for score, count in counts.items():
        if not low <= score <= high:
            raise ValueError(f"score {score} is outside the {kind} range {low}..{high}")
        if count < 0:
            raise ValueError(
                f"score {score} has a negative count {count}: rebuild the rollups"
            )


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _count_between(counts: Mapping[int, int], low: int, high: int) -> int:
    return sum(count for score, count in counts.items() if low <= score <= high)


def _proportion_margin(*, hits: int, n: int) -> float | None:
    """Return the Wald 95% margin of a proportion, in percentage points."""
    # NOTE: at 0% or 100% the Wald margin is 0, which understates the doubt
    # in a small sample. Wilson would not, but its interval is asymmetric.
    if n < 2:
        return None
    p = hits / n
    return Z_95 * math.sqrt(p * (1 - p) / n) * 100


def _mean_sd_margin(
    counts: Mapping[int, int],
) -> tuple[float | None, float | None, float | None]:
    """Return the mean, the sample SD and the t-based 95% margin of the mean."""
    n = sum(counts.values())
    if n == 0:
        return None, None, None
    total = sum(score * count for score, count in counts.items())
    mean = total / n
    if n == 1:
        return mean, None, None
    # Integer sums keep the variance exact until the one division, so large n
    # cannot lose precision to cancellation of two nearly equal floats.
    squares = sum(score * score * count for score, count in counts.items())
    variance = (n * squares - total * total) / (n * (n - 1))
    sd = math.sqrt(variance)
    margin = t_critical_95(df=n - 1) * sd / math.sqrt(n)
    return mean, sd, margin


def nps_summary(*, counts: Mapping[int, int]) -> MetricSummary:
    """Compute the Net Promoter Score and its 95% margin from counts 0-10.

    The score is the mean of +1 (promoter), 0 (passive) and -1 (detractor)
    times 100. Its variance is p_P + p_D - (p_P - p_D)^2, and the margin is
    1.96 * sqrt(variance / n) * 100. When every response is a promoter, or every
    one a detractor, the variance and so the margin are 0.
    """
    validate_counts(kind="nps", counts=counts)
    n = sum(counts.values())
    promoters = _count_between(counts, 9, 10)
    detractors = _count_between(counts, 0, 6)
    score = margin = None
    if n > 0:
        score = (promoters - detractors) / n * 100
    if n > 1:
        # Integer numerator over n^2 keeps the variance exact before sqrt.
        numerator = n * (promoters + detractors) - (promoters - detractors) ** 2
        variance = numerator / (n * n)
        margin = Z_95 * math.sqrt(variance / n) * 100
    return {
        "kind": "nps",
        "n": n,
        "score": _round(score, PERCENT_DIGITS),
        "margin": _round(margin, PERCENT_DIGITS),
        "promoters": promoters,
        "passives": n - promoters - detractors,
        "detractors": detractors,
    }


def top_2_box_summary(*, kind: str, counts: Mapping[int, int]) -> MetricSummary:
    """Compute the top-2-box % (responses of 4 or 5) and the mean of a 1-5 scale.

    Serves CSAT and star ratings. ``satisfied`` counts 4-5, ``neutral`` 3 and
    ``dissatisfied`` 1-2, so the three add up to ``n``. ``mean_margin`` is the
    t-based 95% margin of ``mean``.
    """
    if kind not in ("csat", "rating"):
        raise ValueError(f"top-2-box applies to csat and rating, not {kind!r}")
    validate_counts(kind=kind, counts=counts)
    n = sum(counts.values())
    satisfied = _count_between(counts, 4, 5)
    dissatisfied = _count_between(counts, 1, 2)
    score = satisfied / n * 100 if n > 0 else None
    mean, sd, mean_margin = _mean_sd_margin(counts)
    return {
        "kind": kind,
        "n": n,
        "score": _round(score, PERCENT_DIGITS),
        "margin": _round(_proportion_margin(hits=satisfied, n=n), PERCENT_DIGITS),
        "satisfied": satisfied,
        "neutral": n - satisfied - dissatisfied,
        "dissatisfied": dissatisfied,
        "mean": _round(mean, MEAN_DIGITS),
        "mean_margin": _round(mean_margin, MEAN_DIGITS),
        "sd": _round(sd, MEAN_DIGITS),
    }


def ces_summary(*, counts: Mapping[int, int]) -> MetricSummary:
    """Compute the Customer Effort Score, the mean of 1-7 responses, with its SD.

    ``score`` and ``mean`` carry the same value: ``score`` keeps the shape
    shared by every kind, ``mean`` names what the score is.
    """
    validate_counts(kind="ces", counts=counts)
    n = sum(counts.values())
    mean, sd, margin = _mean_sd_margin(counts)
    return {
        "kind": "ces",
        "n": n,
        "score": _round(mean, MEAN_DIGITS),
        "margin": _round(margin, MEAN_DIGITS),
        "mean": _round(mean, MEAN_DIGITS),
        "sd": _round(sd, MEAN_DIGITS),
    }


def metric_summary_from_counts(
    *, kind: str, counts: Mapping[int, int]
) -> MetricSummary:
    """Compute the summary of ``kind`` (nps, csat, ces or rating) from counts."""
    if kind == "nps":
        return nps_summary(counts=counts)
    if kind == "ces":
        return ces_summary(counts=counts)
    if kind in ("csat", "rating"):
        return top_2_box_summary(kind=kind, counts=counts)
    raise ValueError(
        f"unknown metric kind {kind!r}: expected one of {', '.join(METRIC_KINDS)}"
    )
