"""Experiment results for the sandbox, generated from a seeded model of each variation's visitors and outcomes.

What is simulated is a property of the experiment, never of the question asked about it: each variation's true
figures and its visitors in a window depend only on (seed, experiment, metric, variation, window). Asking with
another ``baseline_variation_id`` changes the lifts and intervals, which are relative to the baseline, and nothing
else. The reported figures are derived from those counts the way a fixed-horizon two-sample test would: rate =
value / samples, the lift's confidence interval by the delta method, ``significance`` = 1 - p-value, and
``is_significant`` exactly when the interval excludes 0 at the experiment's confidence level. So the numbers always
agree with each other and with the verdict, whichever baseline is asked.

Metrics are simulated by aggregator (v2 spec ``ExperimentMetricResults.aggregator``): ``unique``, ``bounce``,
``exit`` and ``ratio`` as the share of visitors who convert; ``count`` as conversions per visitor (Poisson); ``sum``
as the field's total per visitor (a conversion times an exponential order value). Multi-armed bandits send more
traffic to the arms that do better on the primary metric, as Optimizely's bandits do.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any

CONFIDENCE_LEVEL = 0.9
# What the v2 spec's results carry for a figure that is not available (``visitors_remaining``): the largest int64.
# The sandbox's own statement of it, as the answer's side of the contract (tests/test_layers.py holds it equal to
# the client's).
NOT_AVAILABLE_INT64 = 9223372036854775807
_NORMAL = NormalDist()
_Z = _NORMAL.inv_cdf(1 - (1 - CONFIDENCE_LEVEL) / 2)
_SCENARIOS = ("winner", "loser", "flat", "flat", "winner")
_FIVE_MINUTES = 300
# How a bandit splits traffic (assumed: Optimizely documents that bandits favour better arms, not by how much): a
# fifth spread evenly to keep exploring, the rest in proportion to each arm's advantage to the power of 8.
_BANDIT_EXPLORATION = 0.2
_BANDIT_GREED = 8


@dataclass(frozen=True)
class _Truth:
    """A variation's true figures for one metric, per sample: mean and variance."""

    mean: float
    variance: float


def floor_5min(moment: datetime) -> datetime:
    """The largest multiple of 5 minutes (since the epoch) at or before ``moment``: how Optimizely rounds end_time."""
    seconds = math.floor(moment.timestamp())
    return datetime.fromtimestamp(seconds - seconds % _FIVE_MINUTES, UTC)


def _ceil_5min(moment: datetime) -> datetime:
    # How Optimizely rounds start_time: "the smallest time modulo 5 minutes larger or equal to start_time".
    floored = floor_5min(moment)
    return floored if floored == moment else floored + timedelta(seconds=_FIVE_MINUTES)


def experiment_results(
    rule: dict[str, Any],
    *,
    seed: int,
    now: datetime,
    end_time: datetime | None = None,
    start_time: datetime | None = None,
    baseline_variation_id: str | None = None,
) -> dict[str, Any] | None:
    """The ``ExperimentResults`` body for an experiment-backed rule, or None when it has no data (204)."""
    if rule.get("status") == "draft" or rule.get("days_running") is None:
        return None
    variations = list(rule.get("variations", {}).values())
    if not variations:
        return None
    experiment_id = int(rule["layer_experiment_id"])
    # The experiment's own draws, always in this order: how fresh its results are, its traffic, its staleness.
    rng = random.Random(f"{seed}:{experiment_id}")
    lag = rng.choice((0, 5, 15, 60))
    daily = rng.randint(150, 4000)
    stale = rng.random() < 0.3
    # The simulation's control is the first variation, as the spec's default baseline: effects are drawn against
    # it once, whatever baseline the question names.
    control = str(variations[0]["variation_id"])
    baseline = control if baseline_variation_id is None else baseline_variation_id

    days = int(rule["days_running"])
    first_day = floor_5min(now) - timedelta(days=days)
    start = max(_ceil_5min(start_time), first_day) if start_time else first_day
    # Fresher results are not always ready: the answer may end earlier than asked (a documented behaviour).
    latest = floor_5min(now) - timedelta(minutes=lag)
    end = min(floor_5min(end_time), latest) if end_time else latest
    span_days = max(0.0, (end - start).total_seconds() / 86400)

    metrics = rule.get("metrics") or [{}]
    truths = [_truths(m, i, variations, control, seed=seed, experiment_id=experiment_id) for i, m in enumerate(metrics)]
    shares = _shares(rule, variations, truths[0], metrics[0])
    traffic = rule.get("percentage_included", 10000) / 10000
    visitors = {vid: int(daily * span_days * traffic * share) for vid, share in shares.items()}
    results = [
        _metric_results(m, i, variations, baseline, visitors, truths[i], seed=seed, experiment_id=experiment_id)
        for i, m in enumerate(metrics)
    ]
    total = sum(visitors.values())
    treatment = total - visitors[baseline]
    return {
        "experiment_id": experiment_id,
        "confidence_threshold": CONFIDENCE_LEVEL,
        "start_time": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "end_time": end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "is_stale": rule.get("status") in ("paused", "concluded") and stale,
        "stats_config": {"confidence_level": CONFIDENCE_LEVEL, "difference_type": "relative", "epoch_enabled": False},
        "reach": {
            "total_count": total,
            "baseline_count": visitors[baseline],
            "baseline_reach": round(visitors[baseline] / total, 4) if total else 0.0,
            "treatment_count": treatment,
            "treatment_reach": round(treatment / total, 4) if total else 0.0,
            "variations": {
                str(v["variation_id"]): {
                    "variation_id": str(v["variation_id"]),
                    "name": v.get("name", v["key"]),
                    "count": visitors[str(v["variation_id"])],
                    "variation_reach": round(visitors[str(v["variation_id"])] / total, 4) if total else 0.0,
                }
                for v in variations
            },
        },
        "metrics": results,
    }


def _kind(metric: dict[str, Any]) -> str:
    aggregator = metric.get("aggregator", "unique")
    return aggregator if aggregator in ("count", "sum") else "share"


def _truths(
    metric: dict[str, Any],
    index: int,
    variations: list[dict[str, Any]],
    control: str,
    *,
    seed: int,
    experiment_id: int,
) -> dict[str, _Truth]:
    """Each variation's true figures for one metric: the control's drawn for the metric, each other variation's
    effect on it drawn for that variation alone."""
    rng = random.Random(f"{seed}:{experiment_id}:metric:{index}")
    base_rate = rng.uniform(0.02, 0.35)
    per_visitor = rng.uniform(1.0, 4.0)  # count: conversions per visitor (assumed: at least one on average)
    order_value = rng.uniform(20.0, 120.0)  # sum: the field's mean value per conversion
    decreasing = metric.get("winning_direction", "increasing") == "decreasing"
    kind = _kind(metric)
    truths: dict[str, _Truth] = {}
    for variation in variations:
        vid = str(variation["variation_id"])
        effect = 0.0
        if vid != control:
            arm = random.Random(f"{seed}:{experiment_id}:metric:{index}:{vid}")
            scenario = arm.choice(_SCENARIOS)
            size = arm.uniform(0.06, 0.25)
            effect = {"winner": size, "loser": -size, "flat": 0.0}[scenario]
            effect = -effect if decreasing else effect
        if kind == "count":
            rate = per_visitor * (1 + effect)
            truths[vid] = _Truth(rate, rate)
        elif kind == "sum":
            # A visitor converts with base_rate and then brings an exponential value (mean m, second moment 2m²).
            mean_value = order_value * (1 + effect)
            mean = base_rate * mean_value
            truths[vid] = _Truth(mean, 2 * base_rate * mean_value**2 - mean**2)
        else:
            rate = min(0.95, base_rate * (1 + effect))
            truths[vid] = _Truth(rate, rate * (1 - rate))
    return truths


def _shares(
    rule: dict[str, Any], variations: list[dict[str, Any]], primary: dict[str, _Truth], metric: dict[str, Any]
) -> dict[str, float]:
    """Each variation's share of the rule's traffic: its configured split, or for a bandit more to the arms that
    do better on the primary metric (from their true figures, so the same whatever baseline is asked)."""
    ids = [str(v["variation_id"]) for v in variations]
    if rule.get("type") != "multi_armed_bandit":
        return {
            vid: v.get("percentage_included", 0) / 10000 or 1 / len(variations)
            for vid, v in zip(ids, variations, strict=True)
        }
    control = primary[ids[0]].mean or 1.0
    decreasing = metric.get("winning_direction", "increasing") == "decreasing"
    advantage = {
        vid: (control / t.mean if decreasing else t.mean / control) if t.mean else 0.0 for vid, t in primary.items()
    }
    weights = {vid: advantage[vid] ** _BANDIT_GREED for vid in ids}
    total = sum(weights.values()) or 1.0
    return {vid: _BANDIT_EXPLORATION / len(ids) + (1 - _BANDIT_EXPLORATION) * weights[vid] / total for vid in ids}


def _metric_results(
    metric: dict[str, Any],
    index: int,
    variations: list[dict[str, Any]],
    baseline: str,
    visitors: dict[str, int],
    truths: dict[str, _Truth],
    *,
    seed: int,
    experiment_id: int,
) -> dict[str, Any]:
    direction = metric.get("winning_direction", "increasing")
    kind = _kind(metric)
    observed: dict[str, tuple[float, float]] = {}  # value, per-sample variance
    for variation in variations:
        vid = str(variation["variation_id"])
        n, truth = visitors[vid], truths[vid]
        # One standard-normal draw per variation and metric, scaled to the window's visitors: a longer window
        # sharpens the same observation instead of drawing a new one.
        noise = random.Random(f"{seed}:{experiment_id}:metric:{index}:{vid}:noise").gauss(0.0, 1.0)
        total = n * truth.mean + noise * math.sqrt(n * truth.variance)
        if kind == "sum":
            value = max(0.0, round(total, 2))
            observed[vid] = (value, truth.variance)
            continue
        count = max(0, round(total))
        count = min(n, count) if kind == "share" else count
        rate = count / n if n else 0.0
        observed[vid] = (float(count), rate * (1 - rate) if kind == "share" else rate)

    n_b = visitors[baseline]
    value_b, variance_b = observed[baseline]
    rate_b = value_b / n_b if n_b else 0.0
    results: dict[str, Any] = {}
    winner: tuple[float, str] | None = None
    loser: tuple[float, str] | None = None
    for variation in variations:
        vid = str(variation["variation_id"])
        n = visitors[vid]
        value, variance = observed[vid]
        rate = value / n if n else 0.0
        entry: dict[str, Any] = {
            "variation_id": vid,
            "name": variation.get("name", variation["key"]),
            "is_baseline": vid == baseline,
            "level": "variation",
            "rate": round(rate, 6),
            "samples": n,
            "value": value,
            "variance": round(variance, 6),
        }
        if vid != baseline and n and n_b and rate_b > 0:
            diff = rate - rate_b
            se = math.sqrt(variance / n + variance_b / n_b)
            lo, hi = (diff - _Z * se) / rate_b, (diff + _Z * se) / rate_b
            p_value = 2 * (1 - _NORMAL.cdf(abs(diff) / se)) if se > 0 else 1.0
            significant = lo > 0 or hi < 0
            better = diff > 0 if direction == "increasing" else diff < 0
            status = "equal" if diff == 0 else ("better" if better else "worse")
            entry["lift"] = {
                "value": round(diff / rate_b, 6),
                "confidence_interval": [round(lo, 6), round(hi, 6)],
                "is_significant": significant,
                "significance": round(1 - p_value, 6),
                "lift_status": status,
                "is_most_conclusive": False,
                "visitors_remaining": NOT_AVAILABLE_INT64 if significant else _visitors_remaining(diff, se, n),
            }
            if significant:
                score = abs(diff / rate_b)
                if better and (winner is None or score > winner[0]):
                    winner = (score, vid)
                if not better and (loser is None or score > loser[0]):
                    loser = (score, vid)
        results[vid] = entry
    out: dict[str, Any] = {
        "name": metric.get("display_title", "Unique conversions"),
        "event_id": metric.get("event_id"),
        "aggregator": metric.get("aggregator", "unique"),
        "scope": metric.get("scope", "visitor"),
        "winning_direction": direction,
        "results": results,
    }
    if metric.get("field"):
        out["field"] = metric["field"]
    conclusion = {k: v[1] for k, v in (("winner", winner), ("loser", loser)) if v is not None}
    if conclusion:
        out["conclusion"] = conclusion
    return out


def _visitors_remaining(diff: float, se: float, n: int) -> int:
    # Visitors per variation still needed for the observed difference to clear the threshold; n/a when flat.
    if diff == 0 or se == 0:
        return NOT_AVAILABLE_INT64
    needed = n * (_Z * se / abs(diff)) ** 2
    return max(0, int(needed - n))


def experiment_report(results: dict[str, Any] | None) -> str:
    """Optimizely's inferred outcome for the primary metric: win, loss or inconclusive."""
    if not results or not results["metrics"]:
        return "inconclusive"
    conclusion = results["metrics"][0].get("conclusion") or {}
    if "winner" in conclusion:
        return "win"
    if "loser" in conclusion:
        return "loss"
    return "inconclusive"


def utc_now() -> datetime:
    return datetime.now(UTC)
