"""Deciding a claim from seeds: paired differences with intervals, three-valued verdicts, and the
Mantel test for correlations between two matrices over the same classes.

A study must be able to come out either way, so every verdict is one of

- ``"supported"``: the whole interval lies on the claimed side of the threshold;
- ``"contradicted"``: the whole interval lies on the other side;
- ``"undecided"``: the interval contains the threshold (too few seeds, or no effect).

With a handful of seeds the intervals are wide and "undecided" is the honest answer; more seeds
narrow them. The interval that decides is the paired t interval (see ``paired_difference`` for why
not the bootstrap one, which is reported beside it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VERDICTS = ("supported", "contradicted", "undecided")

NAN = float("nan")


@dataclass(frozen=True)
class Claim:
    """One decided claim of a study: the one shape every study's ``claims()`` returns.

    Attributes
    ----------
    claim : what is claimed, in words (the direction the estimate must take to support it).
    metric : what the estimate measures, with its unit ("test accuracy, a minus b (fraction)").
    mean : the estimate: a mean paired difference, a correlation, an accuracy gap.
    interval : (low, high), the interval that decides the verdict ((nan, nan) where there is none).
    p : the one-sided p-value in the claimed direction (nan where none was computed).
    n : how many units of replication the estimate rests on.
    unit : what is replicated: "seeds", "folds", "test images", "classes", "layers"…
    verdict : one of ``VERDICTS``; descriptive remarks go to ``note``, never into the verdict.
    note : why a verdict is what it is where that is not the interval ("1 seed: no interval", "descriptive").
    conditions : where the claim was tested (fraction, speed-up, stage, transfer set…), shown in tables.
    extra : further numbers kept for the record (bootstrap interval, per-seed differences…).
    """

    claim: str
    metric: str
    mean: float
    interval: tuple[float, float]
    p: float
    n: int
    unit: str
    verdict: str
    note: str = ""
    conditions: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(
                f"a claim's verdict must be one of {VERDICTS}, got {self.verdict!r} (put remarks in note=)"
            )
        object.__setattr__(self, "interval", tuple(float(v) for v in self.interval))
        if len(self.interval) != 2:
            raise ValueError(f"a claim's interval is (low, high), got {self.interval!r}")

    @classmethod
    def from_paired(
        cls,
        claim: str,
        metric: str,
        d: dict | None,
        *,
        n: int,
        unit: str = "seeds",
        note: str = "",
        conditions: dict | None = None,
        **extra,
    ) -> Claim:
        """A claim decided by ``paired_difference`` (``d``; None where there were too few units: undecided)."""
        if d is None:
            few = f"{n} {unit}: too few for an interval"
            return cls(
                claim,
                metric,
                NAN,
                (NAN, NAN),
                NAN,
                n,
                unit,
                "undecided",
                f"{few}; {note}" if note else few,
                dict(conditions or {}),
                extra,
            )
        return cls(
            claim,
            metric,
            d["mean"],
            tuple(d["ci"]),
            d["p_value"],
            d["n"],
            unit,
            d["verdict"],
            note,
            dict(conditions or {}),
            {"bootstrap_ci": d["bootstrap_ci"], "differences": d["differences"], "threshold": d["threshold"], **extra},
        )

    @classmethod
    def from_mantel(cls, claim: str, metric: str, m: dict, *, n_classes: int, conditions: dict | None = None) -> Claim:
        """A claim decided by a ``mantel`` test (``m``): r, its one-sided p, the classes as the unit."""
        n, unit = m.get("n_classes", n_classes), "classes (label permutations)"
        r, p, verdict = m.get("r", NAN), m.get("p_value", NAN), m.get("verdict", "undecided")
        return cls(claim, metric, r, (NAN, NAN), p, n, unit, verdict, m.get("note", ""), dict(conditions or {}))

    def row(self) -> dict:
        """A flat, JSON-ready row (``metrics.json``, tidy tables)."""
        return {
            "claim": self.claim,
            "metric": self.metric,
            "mean": self.mean,
            "low": self.interval[0],
            "high": self.interval[1],
            "p": self.p,
            "n": self.n,
            "unit": self.unit,
            "verdict": self.verdict,
            "note": self.note,
            # conditions by their names, never over a field of the claim itself
            **{(f"where_{k}" if k in _ROW_FIELDS else k): v for k, v in self.conditions.items()},
            **{f"extra_{k}": v for k, v in self.extra.items()},
        }


_ROW_FIELDS = ("claim", "metric", "mean", "low", "high", "p", "n", "unit", "verdict", "note")


def claim_rows(claims: list[Claim]) -> list[dict]:
    """``Claim.row()`` of each claim, for ``metrics.json``."""
    return [c.row() for c in claims]


def verdict(low: float, high: float, threshold: float = 0.0) -> str:
    """``supported`` when ``low > threshold``, ``contradicted`` when ``high < threshold``, else ``undecided``."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "undecided"
    if low > threshold:
        return "supported"
    if high < threshold:
        return "contradicted"
    return "undecided"


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of per-seed values, NaNs left
    out: the "mean ± std over seeds" every study table reports."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(v)), float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0


def paired_difference(
    a,
    b,
    *,
    threshold: float = 0.0,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    resolution: float = 0.0,
) -> dict:
    """Is ``a`` larger than ``b`` + ``threshold``, seed by seed?

    ``a`` and ``b`` hold one value per seed, in the same seed order (the same subset, initial
    weights and data order for both arms). Returned: the mean paired difference; ``ci``, the
    paired Student-t interval, which decides the verdict; ``bootstrap_ci``, the percentile
    bootstrap interval of the mean (``scipy.stats.bootstrap`` over seeds), descriptive only; and a
    one-sided sign-flip permutation p-value (``scipy.stats.permutation_test``, H1: mean difference
    > threshold).

    ``resolution`` is the smallest step the metric can take (1 / the number of test images for an
    accuracy): the spread of the differences is taken as at least that, so seeds that happen to
    differ by the same count of images (common with a few hundred test images) do not give a
    zero-width interval and a verdict from a one-image difference.

    Why the t interval decides: with the 3–5 seeds a study affords, the bootstrap interval is far
    too narrow. Simulated (300 null draws of normal differences, 95 % nominal), it excluded zero
    24 % of the time with 3 seeds and 16 % with 5, the t interval 5.7 % and 4.7 %
    (``tests/test_statistics.py`` checks the t interval's rate).
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need one value per seed on both sides, got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired comparison needs at least 2 seeds, got {len(a)}")
    d = a - b
    n, mean = len(d), float(d.mean())
    out = {
        "n": int(n),
        "mean": mean,
        "differences": d.tolist(),
        "threshold": float(threshold),
        "confidence": confidence,
        "resolution": float(resolution),
    }
    sd = max(float(d.std(ddof=1)), float(resolution))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # a continuous metric, every seed the same difference: that point
        low = high = mean
    else:
        low, high = (float(v) for v in stats.t.interval(confidence, n - 1, loc=mean, scale=sd / np.sqrt(n)))
    if np.ptp(d) <= 1e-12 * max(1.0, abs(mean)):
        boot_low = boot_high = mean
    else:
        ci = stats.bootstrap(
            (d,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="percentile",
            random_state=np.random.default_rng(seed),
        ).confidence_interval
        boot_low, boot_high = float(ci.low), float(ci.high)
    p = stats.permutation_test(
        (d - threshold,),
        np.mean,
        permutation_type="samples",
        alternative="greater",
        n_resamples=n_resamples,
        random_state=np.random.default_rng(seed),
    ).pvalue
    out.update(
        ci=[low, high], bootstrap_ci=[boot_low, boot_high], p_value=float(p), verdict=verdict(low, high, threshold)
    )
    return out


def _upper(m: np.ndarray) -> np.ndarray:
    return m[np.triu_indices(m.shape[0], k=1)]


def mantel(x, y, *, alternative: str = "less", n_resamples: int = 9999, seed: int = 0) -> dict:
    """Mantel test: Pearson r between the upper triangles of two symmetric (C, C) matrices over the
    same classes, with a p-value from permuting the class labels of ``y`` (rows and columns
    together) — the pairs are not independent (each class is in C−1 of them), so a plain
    correlation test over pairs overstates significance. ``alternative="less"`` tests for a
    negative correlation (the angle–confusion claim). The verdict is three-valued: ``supported``
    when the one-sided p < 0.05 in the claimed direction, ``contradicted`` when the opposite
    one-sided p < 0.05, else ``undecided``.
    """
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[0] != x.shape[1] or x.shape[0] < 4:
        raise ValueError(
            f"the Mantel test needs two square matrices over the same >= 4 classes, got {x.shape} and {y.shape}"
        )
    if alternative not in ("less", "greater"):
        raise ValueError(f"alternative must be 'less' or 'greater', got {alternative!r}")
    ux = _upper(x)
    ok = np.isfinite(ux) & np.isfinite(_upper(y))
    if ok.sum() < 3 or np.ptp(ux[ok]) == 0 or np.ptp(_upper(y)[ok]) == 0:
        return {
            "r": float("nan"),
            "p_value": float("nan"),
            "p_value_opposite": float("nan"),
            "alternative": alternative,
            "n_classes": int(x.shape[0]),
            "verdict": "undecided",
            "note": "one matrix is constant over the class pairs (e.g. "
            "no pair confused at all): no correlation to test",
        }

    def r(order):
        order = np.asarray(order, dtype=int)
        uy = _upper(y[np.ix_(order, order)])
        return float(np.corrcoef(ux[ok], uy[ok])[0, 1])

    classes = np.arange(x.shape[0])
    res = {}
    for alt in ("less", "greater"):
        res[alt] = stats.permutation_test(
            (classes,),
            r,
            permutation_type="pairings",
            alternative=alt,
            vectorized=False,
            n_resamples=n_resamples,
            random_state=np.random.default_rng(seed),
        )
    other = "greater" if alternative == "less" else "less"
    p, p_other = float(res[alternative].pvalue), float(res[other].pvalue)
    v = "supported" if p < 0.05 else "contradicted" if p_other < 0.05 else "undecided"
    return {
        "r": float(res[alternative].statistic),
        "p_value": p,
        "p_value_opposite": p_other,
        "alternative": alternative,
        "n_classes": int(x.shape[0]),
        "verdict": v,
    }


def mcnemar(correct_a, correct_b, *, alpha: float = 0.05) -> dict:
    """Is classifier A right more often than B on the same test items? McNemar's exact test: of the
    items only one of them gets right (``a_only``, ``b_only``), A's share is Binomial(n, 1/2) under
    no difference. ``p_value`` is one-sided for A better, ``p_value_opposite`` for B better; the
    verdict is ``supported`` (A better at ``alpha``), ``contradicted`` (B better) or ``undecided``.
    The item (a held-out image) is the unit: one network, one split, no seeds."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"McNemar's test needs one right/wrong per item from both classifiers, got shapes {a.shape} and {b.shape}"
        )
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n = a_only + b_only
    p = float(binomtest(a_only, n, 0.5, alternative="greater").pvalue) if n else 1.0
    q = float(binomtest(a_only, n, 0.5, alternative="less").pvalue) if n else 1.0
    v = "supported" if p < alpha else "contradicted" if q < alpha else "undecided"
    return {
        "a_only": a_only,
        "b_only": b_only,
        "n_items": int(len(a)),
        "accuracy_a": float(a.mean()),
        "accuracy_b": float(b.mean()),
        "p_value": p,
        "p_value_opposite": q,
        "verdict": v,
    }


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (the same order as given): a family of tests read together
    (one per layer) keeps its chance of any false "supported" at the level, not at the level per test."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def holm_verdicts(results: list[dict], alpha: float = 0.05) -> list[dict]:
    """``mcnemar`` results of a family of tests with their verdicts decided on Holm-adjusted p-values
    (``p_holm``, ``p_holm_opposite``); each result's own ``p_value`` is kept."""
    if not results:
        return []
    up, down = holm([r["p_value"] for r in results]), holm([r["p_value_opposite"] for r in results])
    return [
        {
            **r,
            "p_holm": float(u),
            "p_holm_opposite": float(d),
            "verdict": "supported" if u < alpha else "contradicted" if d < alpha else "undecided",
        }
        for r, u, d in zip(results, up, down)
    ]
