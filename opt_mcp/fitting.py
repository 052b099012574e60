"""The reduction ladder of each view: the steps by which a result too large for the token budget gives up detail,
least useful first, until it fits, each step noted in the view's ``truncated``.

Each ladder is pure (no I/O, no Context): given the full view, or what it is built from, and the budget, it returns
the first rung that fits, so it can be tested and benchmarked on its own. The primitives are in ``budget``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel

from opt_mcp import render
from opt_mcp.api.models import Flag
from opt_mcp.budget import Detail, Fitted, clip, largest_fitting
from opt_mcp.listing import FlagWindow
from opt_mcp.views import (
    EnvironmentList,
    EnvironmentView,
    FlagDetail,
    FlagList,
    FlagSummary,
    MetricResult,
    ProjectList,
    ProjectView,
    ResultsSummary,
    Truncation,
)

T = TypeVar("T")
V = TypeVar("V", bound=BaseModel)

_TEXT_LIMIT = 500  # characters of a description or a variable's default, once long texts are clipped


# ------------------------------------------------------------------------------------------------------------------
# list_flags
# ------------------------------------------------------------------------------------------------------------------


def fit_flag_list(window: FlagWindow, detail: Detail, budget: int) -> Fitted[FlagList]:
    """The flags of one list_flags call within the budget. In order: at the detail asked; at full, rule lists
    summarised as counts; fewer flags (the next cursor starts at the first left out); and when not even one flag
    fits, none, with the first flag's key, the call that shows it, and a cursor past it.

    Every rung's next cursor is past exactly the flags it shows and those the scope left out among them."""
    scoped_out = []
    if window.scope is not None and window.scoped_out:
        scoped_out.append(
            Truncation(
                omitted=f"flags Optimizely listed that are not {window.scope.describe()} in "
                f"{window.scope.environment} (left out here; total_count is Optimizely's count before that)",
                count=window.scoped_out,
                get_it="list_flags without environment= lists every match",
            )
        )
    flags = window.flags

    def build(
        items: Sequence[Flag], level: Detail, rule_lists: bool, notes: list[Truncation], reach: int | None = None
    ) -> Fitted[FlagList]:
        view = FlagList(
            project_id=str(window.project_id),
            total_count=window.page.total_count,
            returned=len(items),
            detail=level,
            flags=[FlagSummary.of(flag, level, rule_lists=rule_lists) for flag in items],
            next_cursor=window.next_cursor(window.reach(len(items)) if reach is None else reach),
            truncated=[*scoped_out, *notes],
        )
        return Fitted(view, render.flag_list(view))

    attempts: list[tuple[Detail, bool, list[Truncation]]] = [(detail, True, [])]
    if detail == "full" and any(f.environments for f in flags):
        counts_note = Truncation(
            omitted="rule lists (shown as counts by type)",
            count=sum(len(e.rules_detail) for f in flags for e in f.environments.values()),
            get_it="get_flag(flag_key=...) for one flag's rules",
        )
        attempts.append(("full", False, [counts_note]))
    for level, rule_lists, notes in attempts:
        result = build(flags, level, rule_lists, notes)
        if result.fits(budget):
            return result
    level, rule_lists, notes = attempts[-1]
    shorter = Truncation(
        omitted=f"flags of this page (they did not fit the {budget}-token budget)",
        count=0,
        get_it="list_flags with cursor=next_cursor and the same filters",
    )

    def shortened(items: Sequence[Flag]) -> Fitted[FlagList]:
        note = shorter.model_copy(update={"count": len(flags) - len(items)})
        return build(items, level, rule_lists, [*notes, note])

    best = largest_fitting(flags, shortened, lambda r: r.fits(budget))
    if best is None or best[1] == 0:
        # Not even one flag fits at this level: give its key and the call that shows it, and move past it.
        too_big = Truncation(
            omitted=f"flag {flags[0].key!r}, too large for the budget at detail={level}",
            count=1,
            get_it=f"get_flag(flag_key={flags[0].key!r}) or list_flags with detail=summary",
        )
        return build(flags[:0], level, rule_lists, [too_big], reach=window.past_first())
    return best[0]


# ------------------------------------------------------------------------------------------------------------------
# get_flag (and the flag resource)
# ------------------------------------------------------------------------------------------------------------------


def fit_flag_detail(full: FlagDetail, budget: int) -> Fitted[FlagDetail]:
    """The flag within the budget. In order: as it is; long texts clipped; the first rules of each environment
    in full and the rest by key; rules by count only; variables left out."""

    def fitted(view: FlagDetail) -> Fitted[FlagDetail]:
        return Fitted(view, render.flag_detail(view))

    result = fitted(full)
    if result.fits(budget):
        return result
    clipped, notes = _clip_texts(full)
    result = fitted(clipped.model_copy(update={"truncated": notes}))
    if result.fits(budget):
        return result
    by_env = f"get_flag(flag_key={full.key!r}, environment=...)" if len(full.environments) > 1 else None
    rules_note = Truncation(
        omitted="rules (listed by key in more_rules)",
        count=0,
        get_it=by_env or "the Optimizely app (this environment has more rules than fit; raise OPT_MCP_MAX_TOKENS)",
    )

    def first_rules(keep: Sequence[int]) -> Fitted[FlagDetail]:
        envs = [
            e.model_copy(
                update={"rules": e.rules[: len(keep)], "more_rules": [r.key for r in e.rules[len(keep) :]] or None}
            )
            for e in clipped.environments
        ]
        left = sum(len(e.more_rules or []) for e in envs)
        return fitted(
            clipped.model_copy(
                update={"environments": envs, "truncated": [*notes, rules_note.model_copy(update={"count": left})]}
            )
        )

    most = max((len(e.rules) for e in clipped.environments), default=0)
    best = largest_fitting(range(most), first_rules, lambda r: r.fits(budget))
    if best is not None:
        return best[0]
    counts_only = clipped.model_copy(
        update={
            "environments": [e.model_copy(update={"rules": [], "more_rules": None}) for e in clipped.environments],
            "truncated": [
                *notes,
                rules_note.model_copy(
                    update={"omitted": "rules (counts only)", "count": sum(e.rule_count for e in clipped.environments)}
                ),
            ],
        }
    )
    result = fitted(counts_only)
    if result.fits(budget):
        return result
    no_variables = Truncation(omitted="variables", count=len(counts_only.variables), get_it="the Optimizely app")
    bare = counts_only.model_copy(update={"variables": [], "truncated": [*counts_only.truncated, no_variables]})
    result = fitted(bare)
    if result.fits(budget):
        return result
    # Last resort, for names and descriptions of pathological size: cut them short too.
    name, _ = clip(bare.name, 60)
    description, _ = clip(bare.description, 60)
    return fitted(bare.model_copy(update={"name": name, "description": description}))


def _clip_texts(view: FlagDetail) -> tuple[FlagDetail, list[Truncation]]:
    clipped = 0
    description, cut = clip(view.description, _TEXT_LIMIT)
    clipped += cut
    variables = []
    for variable in view.variables:
        default, cut_default = clip(variable.default, _TEXT_LIMIT)
        text, cut_text = clip(variable.description or "", _TEXT_LIMIT)
        clipped += cut_default + cut_text
        variables.append(variable.model_copy(update={"default": default, "description": text or None}))
    notes = []
    if clipped:
        notes.append(
            Truncation(
                omitted=f"long texts (description, variable defaults) cut to {_TEXT_LIMIT} characters",
                count=clipped,
                get_it="the Optimizely app shows them in full",
            )
        )
    return view.model_copy(update={"description": description, "variables": variables}), notes


# ------------------------------------------------------------------------------------------------------------------
# get_results
# ------------------------------------------------------------------------------------------------------------------


def fit_results(summary: ResultsSummary, budget: int, *, in_full: bool) -> Fitted[ResultsSummary]:
    """The results within the budget. In order: primary and secondary metrics in full and monitoring metrics one
    line each (every metric in full when the caller named them, ``in_full``); fewer metrics in full; fewer metrics
    at all."""
    metrics = summary.metrics
    full = len(metrics) if in_full else sum(m.role != "monitoring" for m in metrics)

    def build(in_full: int, shown: int) -> Fitted[ResultsSummary]:
        kept = [m if i < in_full else _one_line(m) for i, m in enumerate(metrics[:shown])]
        notes = []
        if lined := [m.name for m in metrics[in_full:shown]]:
            notes.append(
                Truncation(
                    omitted="per-variation figures of the metrics shown as one line",
                    count=len(lined),
                    get_it=f"get_results with the same arguments and metrics={json.dumps(lined[:3])}",
                )
            )
        if hidden := [m.name for m in metrics[shown:]]:
            notes.append(
                Truncation(
                    omitted="metrics",
                    count=len(hidden),
                    get_it=f"get_results with metrics={json.dumps(hidden[:3])}, or the results page (results_url)",
                )
            )
        view = summary.model_copy(update={"metrics": kept, "truncated": notes})
        return Fitted(view, render.results(view))

    def fits(result: Fitted[ResultsSummary]) -> bool:
        return result.fits(budget)

    best = build(full, len(metrics))
    if fits(best):
        return best
    fewer_in_full = largest_fitting(range(full), lambda kept: build(len(kept), len(metrics)), fits)
    if fewer_in_full:
        return fewer_in_full[0]
    fewer = largest_fitting(range(len(metrics)), lambda kept: build(0, len(kept)), fits)
    return fewer[0] if fewer else build(0, 0)


def _one_line(metric: MetricResult) -> MetricResult:
    named = f" ({metric.verdict_variation})" if metric.verdict_variation else ""
    if metric.verdict == "not_applicable":  # a bandit: its arms' rates, as it has no lifts
        figures = ", ".join(f"{f.variation} {metric.rate_label} {f.rate}" for f in metric.variations)
    else:
        figures = ", ".join(
            f"{f.variation} {render.percent(f.lift)}{'*' if f.significant else ''}"
            for f in metric.variations
            if f.lift is not None
        )
    return metric.model_copy(update={"variations": [], "line": f"{metric.verdict}{named}; {figures or 'no lift yet'}"})


# ------------------------------------------------------------------------------------------------------------------
# list_projects, list_environments
# ------------------------------------------------------------------------------------------------------------------


def fit_projects(projects: Sequence[ProjectView], default_project_id: int | None, budget: int) -> Fitted[ProjectList]:
    """The projects within the budget. In order: all of them; the longest prefix that fits, the rest counted."""

    default = str(default_project_id) if default_project_id is not None else None

    def build(shown: Sequence[ProjectView]) -> Fitted[ProjectList]:
        notes = [] if len(shown) == len(projects) else [_more("projects", len(projects) - len(shown))]
        view = ProjectList(projects=list(shown), default_project_id=default, truncated=notes)
        return Fitted(view, render.project_list(view))

    return _longest_prefix(projects, build, budget)


def fit_environments(project_id: int, environments: Sequence[EnvironmentView], budget: int) -> Fitted[EnvironmentList]:
    """A project's environments within the budget. In order: all of them; the longest prefix that fits (the
    environments come in priority order, production first), the rest counted."""

    def build(shown: Sequence[EnvironmentView]) -> Fitted[EnvironmentList]:
        notes = [] if len(shown) == len(environments) else [_more("environments", len(environments) - len(shown))]
        view = EnvironmentList(project_id=str(project_id), environments=list(shown), truncated=notes)
        return Fitted(view, render.environment_list(view))

    return _longest_prefix(environments, build, budget)


def _more(what: str, count: int) -> Truncation:
    return Truncation(omitted=what, count=count, get_it="raise OPT_MCP_MAX_TOKENS, or the Optimizely app")


def _longest_prefix(items: Sequence[T], build: Callable[[Sequence[T]], Fitted[V]], budget: int) -> Fitted[V]:
    """All items if they fit, else the longest prefix that does (with a note of how many were left out)."""
    whole = build(items)
    if whole.fits(budget):
        return whole
    best = largest_fitting(items, build, lambda r: r.fits(budget))
    return best[0] if best else build(items[:0])
