"""Text renderings of the views: what a model reads. The same facts and numbers as the structured content, written
compactly (tables of flags name their columns once). Text that comes from Optimizely (names, descriptions, keys
of rules) is quoted as JSON strings, so it is always visibly data and can never break a line or a table."""

from __future__ import annotations

import json
from json.encoder import encode_basestring
from typing import assert_never

from opt_mcp.views import (
    EnvironmentList,
    EnvironmentState,
    FlagDetail,
    FlagList,
    ProjectList,
    ResultsSummary,
    RuleView,
    Truncation,
    WriteResult,
    WriteStatus,
)


def q(text: str | None) -> str:
    """Optimizely's text, delimited: a JSON string literal."""
    # What json.dumps(text, ensure_ascii=False) returns, without making an encoder for each string.
    return encode_basestring(text or "")


def _notes(truncated: list[Truncation]) -> list[str]:
    return [f"Left out: {t.count} {t.omitted}. To get them: {t.get_it}" for t in truncated]


def _state(state: EnvironmentState) -> str:
    parts = ["on" if state.on else "off"]
    if state.status:
        parts.append(state.status)
    if state.rules:
        parts.append(" ".join(f"{kind}:{n}" for kind, n in sorted(state.rules.items())))
    if state.rule_list:
        parts.append(
            "[" + ", ".join(f"{q(r.key)} {r.type} {r.status} {r.traffic_percent:g}%" for r in state.rule_list) + "]"
        )
    return " ".join(parts)


def flag_list(view: FlagList) -> str:
    more = "more with next_cursor" if view.next_cursor else "no more pages"
    lines = [f"Project {view.project_id}: {view.returned} of {view.total_count} flags (detail={view.detail}; {more})."]
    environments: list[str] = []
    for flag in view.flags:
        environments += [e for e in flag.environments if e not in environments]
    columns = ["key", "name"]
    if view.detail != "summary":
        columns.append("archived")
    if view.detail == "full":
        columns += ["revision", "updated", "description"]
    lines.append(" | ".join(columns + environments))
    for flag in view.flags:
        row = [q(flag.key), q(flag.name)]
        if flag.archived is not None:
            row.append("yes" if flag.archived else "no")
        if view.detail == "full":
            row += [
                str(flag.revision),
                flag.updated_time.date().isoformat() if flag.updated_time else "",
                q(flag.description),
            ]
        row += [_state(flag.environments[e]) if e in flag.environments else "-" for e in environments]
        lines.append(" | ".join(row))
    if view.next_cursor:
        lines.append(f"next_cursor: {view.next_cursor}")
    return "\n".join(lines + _notes(view.truncated))


def _rule(index: int, rule: RuleView) -> str:
    audiences = "everyone" if not rule.audiences else "audiences " + ",".join(rule.audiences)
    state = "enabled" if rule.enabled else "disabled"
    parts = [
        f"{index}. {q(rule.key)} {q(rule.name)}: {rule.type}, {rule.status}, {state}",
        audiences,
        f"{rule.traffic_percent:g}% traffic",
        "variations " + "/".join(q(v) for v in rule.variations),
    ]
    if rule.primary_metric:
        parts.append(f"primary metric {q(rule.primary_metric)}")
    if rule.days_running is not None:
        parts.append(f"{rule.days_running} days running")
    if rule.experiment_id:
        parts.append(f"experiment_id {rule.experiment_id}")
    return "  " + ", ".join(parts)


def flag_detail(view: FlagDetail) -> str:
    may = [name for name, allowed in view.permissions.model_dump().items() if allowed]
    lines = [
        f"Flag {q(view.key)} {q(view.name)} in project {view.project_id}: revision {view.revision}, "
        f"updated {view.updated_time.isoformat()}, {'ARCHIVED' if view.archived else 'not archived'}.",
        f"description: {q(view.description)}",
        f"you may: {', '.join(may) or 'nothing'}",
    ]
    if view.variables:
        lines.append("variables:")
        lines += [f"  {q(v.key)} {v.type} = {q(v.default)}" for v in view.variables]
    for env in view.environments:
        kind = " (production)" if env.production else ""
        lines.append(
            f"{q(env.key)}{kind}: {'ON' if env.enabled else 'off'}, {env.status}, "
            f"{env.rule_count} rules{'' if env.can_toggle else ', you may not toggle it'}"
        )
        lines += [_rule(i, rule) for i, rule in enumerate(env.rules, start=1)]
    if view.hidden_environments:
        lines.append("not shown: " + ", ".join(q(e) for e in view.hidden_environments))
    return "\n".join(lines + _notes(view.truncated))


def environment_list(view: EnvironmentList) -> str:
    lines = [
        f"Project {view.project_id} environments (priority 1 is production):",
        "key | name | priority | archived | id",
    ]
    lines += [
        f"{q(e.key)} | {q(e.name)} | {e.priority} | {'yes' if e.archived else 'no'} | {e.id}" for e in view.environments
    ]
    return "\n".join(lines + _notes(view.truncated))


def project_list(view: ProjectList) -> str:
    lines = [
        f"{len(view.projects)} projects; default project: {view.default_project_id or 'none'}.",
        "id | name | platform | status | flags",
    ]
    lines += [
        f"{p.id} | {q(p.name)} | {p.platform} | {p.status} | {'yes' if p.flags_enabled else 'no'}"
        for p in view.projects
    ]
    return "\n".join(lines + _notes(view.truncated))


def _headline(status: WriteStatus) -> str:
    # A match, not a dict: mypy proves that every status has its headline.
    match status:
        case "preview":
            return "PREVIEW — nothing has been written."
        case "written":
            return "WRITTEN."
        case "declined":
            return "DECLINED — nothing was written."
        case "changed":
            return "NOT WRITTEN — the resource changed since the preview. This is a fresh preview."
        case "unchanged":
            return "NOTHING TO DO."
        case _:
            assert_never(status)


def write_result(view: WriteResult) -> str:
    lines = [f"{view.tool}: {_headline(view.status)} {view.summary}"]
    lines += [
        f"  {c.path}: {json.dumps(c.before, ensure_ascii=False)} -> {json.dumps(c.after, ensure_ascii=False)}"
        for c in view.changes
    ]
    lines += [f"  effect: {effect}" for effect in view.effects]
    lines += [f"  WARNING: {warning}" for warning in view.warnings]
    lines += [f"  {key}: {outcome}" for key, outcome in view.results.items()]
    if view.revisions:
        lines.append("revisions: " + ", ".join(f"{k} {v}" for k, v in view.revisions.items()))
    if view.confirmation_token:
        lines.append(f"confirmation_token: {view.confirmation_token} (expires {view.expires_at:%H:%M:%S} UTC)")
    lines.append(f"next: {view.next_step}")
    return "\n".join(lines)


def percent(x: float) -> str:
    """Signed, three significant digits: a small bound reads +0.00412%, not +0.00% (which looks like zero)."""
    return f"{x * 100:+.3g}%"


def results(view: ResultsSummary) -> str:
    where = f"{view.flag_key}/{view.environment} rule {view.rule_key}" if view.flag_key else "experiment"
    bandit = view.rule_type == "multi_armed_bandit"  # its figures have no baseline to be relative to
    kind = " (multi-armed bandit)" if bandit else ""
    lines = [f"Results of {where}{kind} (experiment_id {view.experiment_id}): {view.status}."]
    if view.note:
        lines.append(view.note)
    if view.status != "ready":
        return "\n".join(lines)
    window = (
        f"{view.start_time:%Y-%m-%d %H:%M} to {view.end_time:%Y-%m-%d %H:%M} UTC"
        if view.start_time and view.end_time
        else "?"
    )
    outcome = view.inferred_outcome or (
        f"unavailable ({view.inferred_outcome_unavailable})" if view.inferred_outcome_unavailable else "n/a"
    )
    statistics = (
        "" if bandit else f"significance threshold {view.confidence_threshold}; lift is {view.difference_type}; "
    )
    lines.append(
        f"window {window}; {view.days_running if view.days_running is not None else '?'} days running; "
        f"stale: {'yes' if view.is_stale else 'no'}; {statistics}Optimizely's inferred outcome: {outcome}"
    )
    lines.append("visitors: " + ", ".join(f"{q(k)} {v}" for k, v in view.visitors.items()))
    if view.allocation:
        lines.append("allocation: " + ", ".join(f"{q(k)} {v * 100:.3g}%" for k, v in view.allocation.items()))
    for metric in view.metrics:
        named = f" ({q(metric.verdict_variation)})" if metric.verdict_variation else ""
        head = (
            f"{metric.role} metric {q(metric.name)} ({metric.rate_label}, {metric.winning_direction}): "
            f"{metric.verdict.upper()}{named}"
        )
        if metric.line:
            lines.append(f"{head}; {metric.line}")
            continue
        lines.append(head)
        columns = ["variation", metric.samples_label, metric.value_label, metric.rate_label]
        lines.append("  " + " | ".join(columns + ([] if bandit else ["lift", "interval", "significance"])))
        for f in metric.variations:
            row = [q(f.variation), str(f.samples), str(f.value), str(f.rate)]
            if not bandit:
                lift = "baseline" if f.baseline else (percent(f.lift) if f.lift is not None else "-")
                interval = f"[{percent(f.interval[0])}, {percent(f.interval[1])}]" if f.interval else "-"
                sig = (
                    f"{f.significance:.2f}{' significant' if f.significant else ''}"
                    if f.significance is not None
                    else "-"
                )
                row += [lift, interval, sig]
            lines.append("  " + " | ".join(row))
    if view.results_url:
        lines.append(f"results page: {view.results_url}")
    return "\n".join(lines + _notes(view.truncated))
