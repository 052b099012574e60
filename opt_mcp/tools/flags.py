"""Flag tools: list_flags and get_flag (the read side)."""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import Field

from opt_mcp import render
from opt_mcp.api.errors import OptimizelyError
from opt_mcp.api.models import Flag
from opt_mcp.api.query import MAX_PER_PAGE, FlagFilters
from opt_mcp.budget import Detail, Fitted, clip, largest_fitting
from opt_mcp.cursor import Cursor, CursorError, fingerprint
from opt_mcp.runtime import api_errors, runtime
from opt_mcp.tools.args import EnvironmentKey, FlagKey, ProjectId, RuleType
from opt_mcp.views import FlagDetail, FlagList, FlagSummary, Truncation

if TYPE_CHECKING:
    from opt_mcp.api.client import OptimizelyClient  # HTTP is imported on first use, not at start-up

Sort = Literal["key:asc", "name:asc", "updated_time:desc", "created_time:desc"]


DetailArg = Annotated[
    Detail,
    Field(
        description="summary: on/off per environment; standard: + status, rule counts; full: + description, rules",
    ),
]


async def list_flags(
    ctx: Context[Any, Any],
    project_id: ProjectId = None,
    query: Annotated[
        str | None,
        Field(max_length=200, description="substring to find in the key, name or description"),
    ] = None,
    archived: Annotated[bool, Field(description="true lists only archived flags")] = False,
    environment: Annotated[
        EnvironmentKey | None, Field(description="with enabled= or rule_type=: judged in this environment")
    ] = None,
    enabled: Annotated[bool | None, Field(description="only flags that are on (true) or off (false)")] = None,
    rule_type: Annotated[RuleType | None, Field(description="only flags with a rule of this type")] = None,
    sort: Annotated[Sort | None, Field(description="order of the results")] = None,
    detail: DetailArg = "standard",
    cursor: Annotated[str | None, Field(max_length=4000, description="next_cursor of the previous call")] = None,
    limit: Annotated[int, Field(ge=1, le=MAX_PER_PAGE, description="flags per call")] = 25,
) -> Annotated[CallToolResult, FlagList]:
    """Find feature flags: per flag, per environment on/off, status and rule counts. Then get_flag for one.
    When next_cursor is not null, call again with the same filters and cursor=next_cursor."""
    rt = runtime(ctx)
    pid = rt.project(project_id)
    # Whether Optimizely judges enabled= and rule_type= in the environment= named or in any environment is not
    # documented. So each flag is checked here against its own state in that environment, and enabled=false is
    # not sent with an environment: judged in any environment, it would leave out flags on elsewhere.
    scope = _Scope(environment, enabled, rule_type) if environment and (enabled is not None or rule_type) else None
    filters = FlagFilters(
        archived=archived,
        query=query or None,
        environment=[environment] if environment else (),
        enabled=None if scope and enabled is False else enabled,
        rule_type=[rule_type] if rule_type else (),
        sort=[sort] if sort else (),
    )
    query_id = fingerprint({"project": pid, "filters": filters.params()})
    collection = f"/projects/{pid}/flags"
    with api_errors():
        if cursor:
            try:
                position = Cursor.decode(cursor, collection=collection, query=query_id)
            except CursorError as exc:
                raise ToolError(f"cursor: {exc}") from None
        else:
            position = Cursor(collection, rt.client.flags_link(pid, filters, per_page=limit), 0, query_id)
        page = await rt.flags_page(pid, position.link, resuming=position.skip > 0)
    raw = page.items[position.skip : position.skip + limit]
    kept = [i for i, flag in enumerate(raw) if scope is None or scope.matches(flag)]
    window = [raw[i] for i in kept]
    scoped_out = []
    if scope is not None and len(kept) < len(raw):
        scoped_out.append(
            Truncation(
                omitted=f"flags Optimizely listed that are not {scope.describe()} in {environment} (left out here; "
                "total_count is Optimizely's count before that)",
                count=len(raw) - len(kept),
                get_it="list_flags without environment= lists every match",
            )
        )

    def build(
        items: Sequence[Flag], level: Detail, rule_lists: bool, notes: list[Truncation], consumed: int | None = None
    ) -> Fitted[FlagList]:
        # How far into the page this result reaches: past the flags it shows and the ones left out among them.
        if consumed is None:
            consumed = len(raw) if len(items) == len(window) else kept[len(items)]
        end = position.skip + consumed
        notes = [*scoped_out, *notes]
        if end < len(page.items):
            next_cursor: str | None = Cursor(collection, position.link, end, query_id).encode()
        elif page.next_link is not None:
            next_cursor = Cursor(collection, _without_fragment(page.next_link), 0, query_id).encode()
        else:
            next_cursor = None
        view = FlagList(
            project_id=str(pid),
            total_count=page.total_count,
            returned=len(items),
            detail=level,
            flags=[FlagSummary.of(flag, level, rule_lists=rule_lists) for flag in items],
            next_cursor=next_cursor,
            truncated=notes,
        )
        return Fitted(view, render.flag_list(view))

    budget = rt.settings.max_tokens
    # Fitting, in order: the level asked for; full's rule lists summarised as counts; then fewer flags.
    attempts: list[tuple[Detail, bool, list[Truncation]]] = [(detail, True, [])]
    if detail == "full" and any(f.environments for f in window):
        counts_note = Truncation(
            omitted="rule lists (shown as counts by type)",
            count=sum(len(e.rules_detail) for f in window for e in f.environments.values()),
            get_it="get_flag(flag_key=...) for one flag's rules",
        )
        attempts.append(("full", False, [counts_note]))
    for level, rule_lists, notes in attempts:
        result = build(window, level, rule_lists, notes)
        if result.fits(budget):
            return result.response()
    level, rule_lists, notes = attempts[-1]
    shorter = Truncation(
        omitted=f"flags of this page (they did not fit the {budget}-token budget)",
        count=0,
        get_it="list_flags with cursor=next_cursor and the same filters",
    )

    def shortened(items: Sequence[Flag]) -> Fitted[FlagList]:
        note = shorter.model_copy(update={"count": len(window) - len(items)})
        return build(items, level, rule_lists, [*notes, note])

    best = largest_fitting(window, shortened, lambda r: r.fits(budget))
    if best is None or best[1] == 0:
        # Not even one flag fits at this level: give its key and the call that shows it, and move past it.
        too_big = Truncation(
            omitted=f"flag {window[0].key!r}, too large for the budget at detail={level}",
            count=1,
            get_it=f"get_flag(flag_key={window[0].key!r}) or list_flags with detail=summary",
        )
        return build(window[:0], level, rule_lists, [too_big], consumed=kept[0] + 1).response()
    return best[0].response()


@dataclass(frozen=True)
class _Scope:
    """enabled= and rule_type= judged in one environment, from the flag's own state there."""

    environment: str
    enabled: bool | None
    rule_type: str | None

    def matches(self, flag: Flag) -> bool:
        env = flag.environments.get(self.environment)
        if env is None:
            return False
        if self.enabled is not None and env.enabled != self.enabled:
            return False
        if self.rule_type is None:
            return True
        return any(r.type == self.rule_type for r in env.rules_detail) or self.rule_type in env.rules_summary

    def describe(self) -> str:
        parts = [] if self.enabled is None else ["on" if self.enabled else "off"]
        if self.rule_type is not None:
            parts.append(f"with a {self.rule_type} rule")
        return " and ".join(parts)


def _without_fragment(link: str) -> str:
    # next_url carries a '#page' fragment that no request sends; it would only lengthen the cursor.
    return link.partition("#")[0]


async def get_flag(
    ctx: Context[Any, Any],
    flag_key: Annotated[FlagKey, Field(description="the flag's key, e.g. product_sort")],
    project_id: ProjectId = None,
    environment: Annotated[EnvironmentKey | None, Field(description="show only this environment's rules")] = None,
) -> Annotated[CallToolResult, FlagDetail]:
    """One flag: variables, and per environment on/off, status and rules (audiences, traffic, variations,
    metric, days running, experiment_id for get_results), its revision and what you may change."""
    rt = runtime(ctx)
    pid = rt.project(project_id)
    with api_errors():
        try:
            flag = await rt.client.get_flag(pid, flag_key)
        except OptimizelyError as exc:
            if exc.status != 404:
                raise
            suggestions = await _closest_keys(rt.client, pid, flag_key)
            hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else " Call list_flags to see the keys."
            raise ToolError(f"flag_key: no flag {flag_key!r} in project {pid}.{hint}") from None
    if environment is not None and environment not in flag.environments:
        known = ", ".join(sorted(flag.environments)) or "none"
        raise ToolError(f"environment: flag {flag_key!r} has no environment {environment!r}; it has: {known}")
    return fit_flag_detail(FlagDetail.of(pid, flag, environment), rt.settings.max_tokens).response()


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


_TEXT_LIMIT = 500


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


async def _closest_keys(client: "OptimizelyClient", project_id: int, key: str) -> list[str]:
    """Existing keys close to a mistyped one, from at most two searches (never a walk of every flag)."""
    parts = sorted((p for p in re.split(r"[-_]", key) if len(p) >= 3), key=len, reverse=True)
    candidates: set[str] = set()
    for term in [*parts[:1], key[:3]]:
        try:
            page = await client.list_flags_page(project_id, FlagFilters(query=term), per_page=MAX_PER_PAGE)
        except OptimizelyError:
            continue
        candidates.update(flag.key for flag in page.items)
    import difflib  # for a mistyped key only: spared at start-up

    return difflib.get_close_matches(key, sorted(candidates), n=5, cutoff=0.5)
