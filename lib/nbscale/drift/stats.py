"""Distribution distance between a reference sample and a current one, per feature: the population stability
index (PSI, over the reference's deciles, or its categories when it has few distinct values) and a test from
scipy (two-sample Kolmogorov-Smirnov for continuous values, chi-squared on the contingency table for discrete)."""
from __future__ import annotations

from dataclasses import dataclass

DISCRETE_MAX = 20  # a reference with this many distinct values or fewer is compared category by category
EPSILON = 1e-4  # an empty bin's share, so the log in PSI stays finite


@dataclass
class Shift:
    feature: str
    psi: float
    test: str  # "KS" or "chi2"
    p_value: float
    edges: list[float]  # bins of the plot (categories for discrete values)
    reference: list[float]  # share of the reference in each bin
    current: list[float]  # share of the current sample in each bin
    drifted: bool = False


def shift(feature: str, reference, current) -> Shift:
    import numpy as np
    from scipy import stats

    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    categories = np.unique(reference)
    if len(categories) <= DISCRETE_MAX:
        values = np.union1d(categories, np.unique(current))
        ref_counts = np.array([(reference == v).sum() for v in values], dtype=np.float64)
        cur_counts = np.array([(current == v).sum() for v in values], dtype=np.float64)
        table = np.stack([ref_counts, cur_counts])
        table = table[:, table.sum(axis=0) > 0]
        p_value = 1.0 if table.shape[1] < 2 else float(stats.chi2_contingency(table)[1])
        test, edges = "chi2", values.tolist()
    else:
        edges_inner = np.unique(np.quantile(reference, np.linspace(0, 1, 11)[1:-1]))
        bins = np.concatenate([[-np.inf], edges_inner, [np.inf]])
        ref_counts = np.histogram(reference, bins)[0].astype(np.float64)
        cur_counts = np.histogram(current, bins)[0].astype(np.float64)
        p_value = float(stats.ks_2samp(reference, current).pvalue)
        low, high = float(min(reference.min(), current.min())), float(max(reference.max(), current.max()))
        test, edges = "KS", [low, *edges_inner.tolist(), high]
    ref_share = np.maximum(ref_counts / max(ref_counts.sum(), 1), EPSILON)
    cur_share = np.maximum(cur_counts / max(cur_counts.sum(), 1), EPSILON)
    psi = float(((cur_share - ref_share) * np.log(cur_share / ref_share)).sum())
    return Shift(feature, psi, test, p_value, edges, (ref_counts / max(ref_counts.sum(), 1)).tolist(),
                 (cur_counts / max(cur_counts.sum(), 1)).tolist())
