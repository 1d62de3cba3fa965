"""Pairwise Wilcoxon tests and Holm's correction, against scipy and by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from flare_eval.presets import RankingMetric
from flare_eval.ranking import holm, pairwise_significance, wilcoxon_better_p

DSC = (RankingMetric("organ_dsc", True, 1.0, "mean"),)


def _scipy_p(x: np.ndarray, y: np.ndarray, alternative: str) -> float:
    return float(wilcoxon(x, y, zero_method="wilcox", correction=True, method="asymptotic",
                          alternative=alternative).pvalue)


def test_wilcoxon_matches_scipy_with_ties_and_zeros(rng):
    # values on a coarse grid so that differences tie and some are exactly zero
    values = np.round(rng.normal(0.0, 1.0, size=(40, 5)) * 2) / 2
    values[:, 3] = values[:, 1] + np.round(rng.normal(0.3, 0.5, size=40) * 2) / 2
    p = wilcoxon_better_p(values)
    for a in range(5):
        for b in range(5):
            if a == b:
                assert np.isnan(p[a, b])
                continue
            # lower is better: "a better than b" is alternative "less" on a - b
            assert p[a, b] == pytest.approx(_scipy_p(values[:, a], values[:, b], "less"), rel=1e-12)


def test_wilcoxon_drops_missing_pairs(rng):
    values = rng.normal(size=(30, 3))
    values[[2, 7, 11], 0] = np.nan
    p = wilcoxon_better_p(values)
    keep = ~np.isnan(values[:, 0])
    assert p[0, 1] == pytest.approx(_scipy_p(values[keep, 0], values[keep, 1], "less"), rel=1e-12)
    assert p[1, 0] == pytest.approx(_scipy_p(values[keep, 1], values[keep, 0], "less"), rel=1e-12)
    assert p[1, 2] == pytest.approx(_scipy_p(values[:, 1], values[:, 2], "less"), rel=1e-12)


def test_all_equal_values_give_no_evidence():
    p = wilcoxon_better_p(np.ones((10, 3)))
    off = ~np.eye(3, dtype=bool)
    assert np.all(p[off] == 1.0)


def test_holm_by_hand():
    # R: p.adjust(c(0.01, 0.04, 0.03), "holm") = 0.03 0.06 0.06
    # (0.01*3 = 0.03; 0.03*2 = 0.06; max(0.06, 0.04*1) = 0.06)
    assert holm(np.array([0.01, 0.04, 0.03])) == pytest.approx([0.03, 0.06, 0.06])
    # capped at 1, NaN left out of m: m = 2 here
    adjusted = holm(np.array([[np.nan, 0.6], [0.7, np.nan]]))
    assert adjusted[0, 1] == pytest.approx(1.0) and adjusted[1, 0] == pytest.approx(1.0)
    assert np.isnan(adjusted[0, 0])


def test_pairwise_significance_table(rng):
    cases = [f"c{i}" for i in range(25)]
    good = rng.uniform(0.85, 0.95, size=25)
    bad = good - rng.uniform(0.05, 0.1, size=25)
    mid = good - rng.normal(0.0, 0.01, size=25)
    table = pd.DataFrame({
        "team": ["good"] * 25 + ["bad"] * 25 + ["mid"] * 25,
        "case": cases * 3,
        "metric": "organ_dsc",
        "value": np.concatenate([good, bad, mid]),
    })
    sig = pairwise_significance(table, metrics=DSC)
    assert list(sig.columns) == ["metric", "team", "other", "p_value", "p_holm", "significant"]
    assert len(sig) == 6
    row = sig.set_index(["team", "other"])
    # higher DSC is better: "good better than bad" is alternative "greater" on good - bad
    assert row.loc[("good", "bad"), "p_value"] == pytest.approx(_scipy_p(good, bad, "greater"))
    raw = sig["p_value"].to_numpy()
    assert row.loc[("good", "bad"), "p_holm"] == pytest.approx(min(1.0, 6 * raw.min()))
    assert bool(row.loc[("good", "bad"), "significant"])
    assert not bool(row.loc[("bad", "good"), "significant"])
    assert not bool(row.loc[("good", "mid"), "significant"])
