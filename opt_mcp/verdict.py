"""Reading experiment results the way Optimizely does: a variation wins or loses on a metric only when its lift's
confidence interval lies entirely on one side of zero, and "better" depends on the metric's winning direction.
A non-significant difference is inconclusive, whatever its sign or ``lift_status`` says. A multi-armed bandit has no
verdict at all: "multiarmed bandits do not generate statistical significance" and "do not use a control or a
baseline experience" (Optimizely, "Maximize lift with multi-armed bandit optimizations")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from opt_mcp.api.models import ExperimentMetricResults, VariantResults

Verdict = Literal["winner", "loser", "inconclusive", "no_data", "not_applicable"]


@dataclass(frozen=True)
class Reading:
    verdict: Verdict
    variation_id: str | None = None


def direction_of(variant: VariantResults, winning_direction: str | None) -> Literal["better", "worse"] | None:
    """Significantly better or worse than the baseline, or None when the interval straddles zero."""
    lift = variant.lift
    if lift is None or not variant.samples:
        return None
    interval = lift.confidence_interval
    if interval and len(interval) == 2:
        low, high = interval
        above, below = low > 0, high < 0
    elif lift.is_significant and lift.value is not None:
        above, below = lift.value > 0, lift.value < 0
    else:
        return None
    if not (above or below):
        return None
    good = above if winning_direction != "decreasing" else below
    return "better" if good else "worse"


def read_metric(metric: ExperimentMetricResults, *, bandit: bool = False) -> Reading:
    """The metric's verdict and the variation it names (the largest significant effect). For a ``bandit``, none:
    whether or not Optimizely's answer carries lift and significance fields for it, no verdict is read from them."""
    if bandit:  # it needs no baseline: any arm's samples are data
        return Reading("not_applicable" if any(v.samples for v in metric.results.values()) else "no_data")
    variants = [v for v in metric.results.values() if not v.is_baseline]
    baseline = next((v for v in metric.results.values() if v.is_baseline), None)
    if baseline is None or not baseline.samples or not any(v.samples for v in variants):
        return Reading("no_data")
    better: list[tuple[float, str]] = []
    worse: list[tuple[float, str]] = []
    for variant in variants:
        side = direction_of(variant, metric.winning_direction)
        size = abs(variant.lift.value or 0) if variant.lift else 0.0
        if side == "better":
            better.append((size, variant.variation_id or ""))
        elif side == "worse":
            worse.append((size, variant.variation_id or ""))
    if better:
        return Reading("winner", max(better)[1])
    if worse:
        return Reading("loser", max(worse)[1])
    return Reading("inconclusive")
