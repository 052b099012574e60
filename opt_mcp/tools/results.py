"""get_results: a flag rule's experiment results, read the way Optimizely reads them."""

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import Field

from opt_mcp import lookup
from opt_mcp.api.errors import OptimizelyError
from opt_mcp.api.models import NOT_AVAILABLE_INT64, ExperimentMetricResults, ExperimentResults, RuleDetails
from opt_mcp.fitting import fit_results
from opt_mcp.runtime import Answer, Runtime, api_errors, failure, runtime
from opt_mcp.tools.args import BANDIT, EXPERIMENT_TYPES, EnvironmentKey, FlagKey, ProjectId
from opt_mcp.verdict import read_metric
from opt_mcp.views import MetricResult, ResultsSummary, VariationFigures

SECONDARY_METRICS = 5  # after the primary, as Optimizely's results page shows them; the rest are monitoring
FIVE_MINUTES = 300  # Optimizely rounds end_time down to a multiple of this many seconds
BANDIT_NOTE = (
    "A multi-armed bandit: no winner or loser is read from it. Bandits do not generate statistical significance "
    "and do not use a baseline (Optimizely's documentation); they send more traffic to the arms doing better. "
    "Shown instead: each arm's share of the visitors (allocation) and its rate on each metric."
)
# What a metric's samples are, by its scope (v2 spec ExperimentMetricResults.scope: its denominator).
_SCOPES = {"visitor": "visitors", "session": "sessions", "event": "events"}


@dataclass(frozen=True)
class RuleFacts:
    """What a result says of the rule behind its experiment: from the flag, or found by the experiment id."""

    flag_key: str | None = None
    environment: str | None = None
    rule_key: str | None = None
    rule_type: str | None = None
    days_running: int | None = None
    results_url: str | None = None

    @classmethod
    def of(cls, flag_key: str, environment: str, rule: RuleDetails) -> "RuleFacts":
        return cls(flag_key, environment, rule.key, rule.type, rule.days_running, rule.fetch_results_ui_url)


async def get_results(
    ctx: Context[Any, Any],
    flag_key: Annotated[FlagKey | None, Field(description="the flag")] = None,
    environment: Annotated[EnvironmentKey | None, Field(description="e.g. production")] = None,
    rule_key: Annotated[str | None, Field(max_length=100, description="needed when several experiments")] = None,
    experiment_id: Annotated[int | None, Field(gt=0, description="instead of flag_key/environment")] = None,
    start_time: Annotated[datetime | None, Field(description="ISO 8601, with a time zone")] = None,
    end_time: Annotated[datetime | None, Field(description="ISO 8601, with a time zone")] = None,
    baseline_variation_id: Annotated[str | None, Field(max_length=40)] = None,
    metrics: Annotated[list[str] | None, Field(max_length=20, description="only these metrics, in full")] = None,
    project_id: ProjectId = None,
) -> Annotated[CallToolResult, ResultsSummary]:
    """An A/B or bandit rule's results: per metric (primary first) visitors, rate, lift, interval, significance and
    a verdict (winner/loser only when the interval clears zero; none for bandits, which get each arm's traffic share
    and rate). Give flag_key + environment, or experiment_id."""
    rt = runtime(ctx)
    if (start_time and start_time.tzinfo is None) or (end_time and end_time.tzinfo is None):
        raise ToolError("start_time/end_time: include a time zone, e.g. 2026-01-31T00:00:00Z")
    notes: list[str] = []
    if experiment_id is None:
        if flag_key is None or environment is None:
            raise ToolError("flag_key and environment are required (or experiment_id, from get_flag)")
        found = await _rule(rt, rt.project(project_id), flag_key, environment, rule_key)
        experiment_id = found.layer_experiment_id
        assert experiment_id is not None
        rule = RuleFacts.of(flag_key, environment, found)
    else:
        rule, missing = await _find(rt, project_id, experiment_id)
        notes += [missing] if missing else []
    bandit = rule.rule_type == BANDIT
    with api_errors():
        # A bandit's /report is not asked: it could only name a winner or loser, which a bandit has none of.
        answer = await rt.experiment_results(
            experiment_id, start_time, end_time, baseline_variation_id, report=not bandit
        )
    summary = _summary(answer, experiment_id, rule, end_time, notes)
    if metrics:
        summary = _only(summary, metrics)
    return fit_results(summary, rt.settings.max_tokens, in_full=bool(metrics)).response()


def _only(summary: ResultsSummary, names: list[str]) -> ResultsSummary:
    """The metrics named (case-insensitively), in the experiment's order; an unknown name is an error."""
    wanted = {n.strip().casefold() for n in names}
    known = {m.name.casefold() for m in summary.metrics}
    unknown = sorted(wanted - known)
    if unknown and summary.status == "ready":
        available = ", ".join(repr(m.name) for m in summary.metrics[:30])
        raise ToolError(f"metrics: no metric named {', '.join(map(repr, unknown))}; this experiment has: {available}")
    return summary.model_copy(update={"metrics": [m for m in summary.metrics if m.name.casefold() in wanted]})


async def _rule(rt: Runtime, pid: int, flag_key: str, environment: str, rule_key: str | None) -> RuleDetails:
    with api_errors():
        flag = await lookup.flag(rt.client, pid, flag_key)
        env = lookup.environment_of(flag, environment)
    experiments = [r for r in env.rules_detail if r.type in EXPERIMENT_TYPES and r.layer_experiment_id]
    listed = ", ".join(f"{r.key} ({r.type}, {r.status})" for r in experiments) or "none"
    if rule_key is not None:
        found = next((r for r in env.rules_detail if r.key == rule_key), None)
        if found is None:
            raise ToolError(f"rule_key: no rule {rule_key!r} in {flag_key}/{environment}; experiment rules: {listed}")
        if found not in experiments:
            raise ToolError(
                f"rule_key: {rule_key!r} is a {found.type} rule, which has no results; experiments: {listed}"
            )
        return found
    if not experiments:
        raise ToolError(
            f"environment: {flag_key}/{environment} has no A/B or multi-armed bandit rule, so no results; "
            "get_flag shows which environments run one"
        )
    if len(experiments) > 1:
        raise ToolError(f"rule_key: {flag_key}/{environment} has several experiments, name one: {listed}")
    return experiments[0]


async def _find(rt: Runtime, project_id: int | None, experiment_id: int) -> tuple[RuleFacts, str | None]:
    """The rule behind an experiment id, as the flag_key form knows it: its flag, environment and key from the Flags
    API's rule lookup, then its days running and results page from the flag. What could not be found is said in the
    returned note, never raised: the results are returned either way."""
    unknown = (
        "flag_key, environment, rule_key, days_running and results_url are unknown, and so is whether it is a "
        "multi-armed bandit (whose results have no verdict)"
    )
    try:
        pid = rt.project(project_id)
    except ToolError:
        return RuleFacts(), f"The flag rule of experiment {experiment_id} was not looked up (no project_id): {unknown}."
    try:
        found = await rt.client.get_experiment_rule(pid, experiment_id)
    except OptimizelyError as exc:
        return RuleFacts(), (
            f"The flag rule of experiment {experiment_id} was not found in project {pid} ({failure(exc)}): {unknown}. "
            "If the experiment is in another project, pass its project_id."
        )
    if found.layer_experiment_id not in (None, experiment_id):
        return RuleFacts(), (
            f"Optimizely answered the lookup of experiment {experiment_id} with the rule of experiment "
            f"{found.layer_experiment_id}: {unknown}."
        )
    partial = RuleFacts(found.flag_key, found.environment_key, found.key, found.type, None, found.fetch_results_ui_url)
    if not found.flag_key or not found.environment_key:
        return partial, f"Optimizely's rule {found.key!r} of experiment {experiment_id} names no flag or environment."
    try:
        details = await _rule(rt, pid, found.flag_key, found.environment_key, found.key)
    except ToolError as exc:
        return partial, f"The days running of rule {found.key!r} are unknown: its flag could not be read ({exc})."
    return RuleFacts.of(found.flag_key, found.environment_key, details), None


def _readable(x: float) -> float:
    """Four significant digits: shorter to read, and unlike fixed decimals it never turns a small interval bound
    into 0 (which would change whether the interval clears zero)."""
    return float(f"{x:.4g}")


def variation_figures(metric: ExperimentMetricResults, *, bandit: bool = False) -> list[VariationFigures]:
    """Each variation's figures, baseline first, rounded for reading without changing which side of 0 they are on.
    A bandit's arms get no lift, interval or significance: bandits have neither significance nor a baseline."""
    out = []
    for vid, v in metric.results.items():
        lift = None if bandit else v.lift
        remaining = lift.visitors_remaining if lift else None
        interval = lift.confidence_interval if lift else None
        out.append(
            VariationFigures(
                variation=v.name or vid,
                id=v.variation_id or vid,
                baseline=v.is_baseline,
                samples=int(v.samples or 0),
                value=v.value,
                rate=_readable(v.rate) if v.rate is not None else None,
                lift=_readable(lift.value) if lift and lift.value is not None else None,
                interval=[_readable(x) for x in interval] if interval else None,
                significance=_readable(lift.significance) if lift and lift.significance is not None else None,
                significant=lift.is_significant if lift else None,
                visitors_remaining=None if remaining in (None, NOT_AVAILABLE_INT64) else remaining,
            )
        )
    return sorted(out, key=lambda f: not f.baseline)


def labels(metric: ExperimentMetricResults) -> tuple[str, str, str]:
    """What a metric's samples, value and rate are, by its aggregator, field and scope: Optimizely's ``value`` is
    the numerator, which is conversions only for the unique and count aggregators."""
    samples = _SCOPES.get(metric.scope or "", "samples")
    per = samples.removesuffix("s")
    field = metric.field or "value"
    match metric.aggregator:
        case "unique":
            return samples, "unique conversions", "conversion rate"
        case "count":
            return samples, "total conversions", f"conversions per {per}"
        case "sum":
            return samples, "revenue" if field == "revenue" else f"sum of {field}", f"{field} per {per}"
        case "bounce":
            return samples, "bounces", "bounce rate"
        case "exit":
            return samples, "exits", "exit rate"
        case "ratio":
            return "denominator", "numerator", "ratio"
        case _:
            return samples, "value", "rate"


def _metric(metric: ExperimentMetricResults, role: str, *, bandit: bool) -> MetricResult:
    reading = read_metric(metric, bandit=bandit)
    names = {v.variation_id or k: v.name or k for k, v in metric.results.items()}
    samples_label, value_label, rate_label = labels(metric)
    return MetricResult(
        name=metric.name or "(unnamed metric)",
        role=role,
        winning_direction=metric.winning_direction,
        aggregator=metric.aggregator,
        samples_label=samples_label,
        value_label=value_label,
        rate_label=rate_label,
        verdict=reading.verdict,
        verdict_variation=names.get(reading.variation_id or "") if reading.variation_id else None,
        variations=variation_figures(metric, bandit=bandit),
    )


def floor_5min(moment: datetime) -> datetime:
    """``moment`` rounded as Optimizely rounds an end_time: down to a multiple of 5 minutes."""
    seconds = math.floor(moment.timestamp())
    return datetime.fromtimestamp(seconds - seconds % FIVE_MINUTES, UTC)


def _summary(
    answer: Answer, experiment_id: int, rule: RuleFacts, asked_end: datetime | None, notes: list[str]
) -> ResultsSummary:
    bandit = rule.rule_type == BANDIT
    base: dict[str, Any] = {
        "experiment_id": str(experiment_id),
        "flag_key": rule.flag_key,
        "environment": rule.environment,
        "rule_key": rule.rule_key,
        "rule_type": rule.rule_type,
        "days_running": rule.days_running,
        "results_url": rule.results_url,
    }
    if answer.results.state == "processing":
        note = "Optimizely is still computing these results: try again in a minute."
        return ResultsSummary(status="processing", note=" ".join([note, *notes]), **base)
    results: ExperimentResults | None = answer.results.results
    if answer.results.state == "no_data" or results is None:
        note = "No results yet: the experiment has not started or has no visitors."
        return ResultsSummary(status="no_data", note=" ".join([note, *notes]), **base)
    metrics = [
        _metric(m, "primary" if i == 0 else "secondary" if i <= SECONDARY_METRICS else "monitoring", bandit=bandit)
        for i, m in enumerate(results.metrics)
    ]
    reach = results.reach.variations if results.reach else {}
    visitors = {(v.name or k): int(v.count or 0) for k, v in reach.items()}
    total = sum(visitors.values())
    # Optimizely rounds the end down to 5 minutes: only an end earlier than that is a shorter window.
    shorter = bool(asked_end and results.end_time and results.end_time < floor_5min(asked_end))
    said = ["No visitors yet."] if not total else []
    if total and shorter:
        said.append("Fresher results were not ready: the window ends earlier than asked.")
    if total and bandit:
        said.append(BANDIT_NOTE)
    unavailable = _why_no_outcome(answer, bandit)
    if answer.report_error:
        said.append(f"Optimizely's inferred outcome is unavailable: {unavailable}.")
    return ResultsSummary(
        status="ready",
        start_time=results.start_time,
        end_time=results.end_time,
        window_shorter_than_asked=shorter,
        is_stale=results.is_stale,
        # A bandit's figures are neither tested against a threshold nor relative to a baseline.
        confidence_threshold=None if bandit else results.confidence_threshold,
        difference_type=None if bandit or not results.stats_config else results.stats_config.difference_type,
        visitors=visitors,
        allocation={name: _readable(count / total) for name, count in visitors.items()} if bandit and total else None,
        inferred_outcome=answer.outcome,
        inferred_outcome_unavailable=unavailable,
        metrics=metrics,
        note=" ".join(said + notes) or None,
        **base,
    )


def _why_no_outcome(answer: Answer, bandit: bool) -> str | None:
    if answer.outcome is not None:
        return None
    if bandit:
        return "not asked: a bandit has no win or loss"
    if answer.report_error:
        return f"its /report request (a legacy endpoint) failed ({answer.report_error}); the results do not need it"
    return "Optimizely gave none for this window yet"
