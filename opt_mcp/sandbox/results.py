"""Experiment results for the sandbox, generated from a seeded model of visitors and conversions.

Per variation and metric: visitors from the rule's traffic and days running, conversions drawn around a true rate
that is better, worse or the same as the baseline's. The reported figures are then derived from those counts the
way a fixed-horizon two-sample test would: rate = conversions / visitors, relative lift with a confidence interval
from the delta method, ``significance`` = 1 - p-value, and ``is_significant`` exactly when the interval excludes 0
at the experiment's confidence level. So the numbers always agree with each other and with the verdict.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any

CONFIDENCE_LEVEL = 0.9
# What the v2 spec's results carry for a figure that is not available (``visitors_remaining``): the largest int64.
# The sandbox's own statement of it, as the answer's side of the contract (tests/test_layers.py holds it equal to
# the client's).
NOT_AVAILABLE_INT64 = 9223372036854775807
_NORMAL = NormalDist()
_SCENARIOS = ("winner", "loser", "flat", "flat", "winner")


def _floor_5min(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


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
    experiment_id = int(rule["layer_experiment_id"])
    rng = random.Random(f"{seed}:{experiment_id}")
    variations = list(rule.get("variations", {}).values())
    if not variations:
        return None
    baseline = variations[0]
    if baseline_variation_id is not None:
        baseline = next(v for v in variations if str(v["variation_id"]) == baseline_variation_id)

    days = int(rule["days_running"])
    first_day = _floor_5min(now) - timedelta(days=days)
    start = max(start_time, first_day) if start_time else first_day
    # Fresher results are not always ready: the answer may end earlier than asked (a documented behaviour).
    latest = _floor_5min(now) - timedelta(minutes=rng.choice((0, 5, 15, 60)))
    end = min(_floor_5min(end_time), latest) if end_time else latest
    span_days = max(0.0, (end - start).total_seconds() / 86400)
    daily = rng.randint(150, 4000)
    traffic = rule.get("percentage_included", 10000) / 10000
    visitors: dict[str, int] = {}
    for variation in variations:
        share = variation.get("percentage_included", 0) / 10000 or 1 / len(variations)
        visitors[str(variation["variation_id"])] = int(daily * span_days * traffic * share)

    metrics = [_metric_results(metric, variations, baseline, visitors, rng) for metric in rule.get("metrics") or [{}]]
    base_id = str(baseline["variation_id"])
    total = sum(visitors.values())
    treatment = total - visitors[base_id]
    return {
        "experiment_id": experiment_id,
        "confidence_threshold": CONFIDENCE_LEVEL,
        "start_time": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "end_time": end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "is_stale": rule.get("status") in ("paused", "concluded") and rng.random() < 0.3,
        "stats_config": {"confidence_level": CONFIDENCE_LEVEL, "difference_type": "relative", "epoch_enabled": False},
        "reach": {
            "total_count": total,
            "baseline_count": visitors[base_id],
            "baseline_reach": round(visitors[base_id] / total, 4) if total else 0.0,
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
        "metrics": metrics,
    }


def _metric_results(
    metric: dict[str, Any],
    variations: list[dict[str, Any]],
    baseline: dict[str, Any],
    visitors: dict[str, int],
    rng: random.Random,
) -> dict[str, Any]:
    direction = metric.get("winning_direction", "increasing")
    base_rate = rng.uniform(0.02, 0.35)
    z = _NORMAL.inv_cdf(1 - (1 - CONFIDENCE_LEVEL) / 2)
    base_id = str(baseline["variation_id"])
    conversions: dict[str, int] = {}
    for variation in variations:
        vid = str(variation["variation_id"])
        true_rate = base_rate
        if vid != base_id:
            scenario = rng.choice(_SCENARIOS)
            effect = {"winner": rng.uniform(0.06, 0.25), "loser": -rng.uniform(0.06, 0.25), "flat": 0.0}[scenario]
            effect = -effect if direction == "decreasing" else effect
            true_rate = min(0.95, base_rate * (1 + effect))
        n = visitors[vid]
        mean, sd = n * true_rate, math.sqrt(n * true_rate * (1 - true_rate))
        conversions[vid] = max(0, min(n, round(rng.gauss(mean, sd)))) if n else 0

    n_b, c_b = visitors[base_id], conversions[base_id]
    rate_b = c_b / n_b if n_b else 0.0
    results: dict[str, Any] = {}
    winner: tuple[float, str] | None = None
    loser: tuple[float, str] | None = None
    for variation in variations:
        vid = str(variation["variation_id"])
        n, c = visitors[vid], conversions[vid]
        rate = c / n if n else 0.0
        entry: dict[str, Any] = {
            "variation_id": vid,
            "name": variation.get("name", variation["key"]),
            "is_baseline": vid == base_id,
            "level": "variation",
            "rate": round(rate, 6),
            "samples": n,
            "value": float(c),
            "variance": round(rate * (1 - rate), 6),
        }
        if vid != base_id and n and n_b and rate_b > 0:
            diff = rate - rate_b
            se = math.sqrt(rate * (1 - rate) / n + rate_b * (1 - rate_b) / n_b)
            lo, hi = (diff - z * se) / rate_b, (diff + z * se) / rate_b
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
                "visitors_remaining": NOT_AVAILABLE_INT64 if significant else _visitors_remaining(diff, se, n, z),
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


def _visitors_remaining(diff: float, se: float, n: int, z: float) -> int:
    # Visitors per variation still needed for the observed difference to clear the threshold; n/a when flat.
    if diff == 0 or se == 0:
        return NOT_AVAILABLE_INT64
    needed = n * (z * se / abs(diff)) ** 2
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
