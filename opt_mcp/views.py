"""What the tools return: compact, typed views of Optimizely's resources. These are the tools' output schemas.

Ids are strings here: JSON numbers above 2**53 lose digits in JavaScript hosts, and Optimizely's ids can be that
large. Tools accept them back as strings or numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema

from opt_mcp.api.models import Environment, Flag, FlagEnvironment, Project, RuleDetails
from opt_mcp.budget import Detail


def untitled(schema: dict[str, Any]) -> None:
    """Tool definitions are read on every turn: drop the titles pydantic derives from field names.

    Optional fields stay ``anyOf`` branches of one type each: ``"type": [T, "null"]`` would be shorter, but clients
    that map schemas onto a single-type dialect reject it (the MCP Inspector flags it as a portability warning).
    """
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)


def inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with each ``$ref`` into ``$defs`` replaced by the definition (the reference's own keys win), and no
    ``$defs``: self-contained for clients that resolve no references, smaller (each view is used once), and
    quicker to validate. A recursive view cannot be inlined: it raises, so such a change shows in the tests."""
    definitions = schema.get("$defs", {})

    def resolve(node: Any, inside: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, inside) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            name = reference.removeprefix("#/$defs/")
            if name in inside:
                raise ValueError(f"view {name} refers to itself: its schema cannot be inlined")
            own = {key: value for key, value in node.items() if key != "$ref"}
            return {**resolve(definitions[name], (*inside, name)), **resolve(own, inside)}
        return {key: resolve(value, inside) for key, value in node.items() if key != "$defs"}

    resolved: dict[str, Any] = resolve(schema, ())
    return resolved


def without_titles(schema: Any) -> Any:
    """A copy of an input schema without the titles pydantic derives from names and without ``"default": null``
    (an annotation only: ``required`` already says a parameter may be left out). Output models drop their titles
    through ``untitled``."""
    if isinstance(schema, dict):
        return {
            k: without_titles(v)
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str)) and not (k == "default" and v is None)
        }
    if isinstance(schema, list):
        return [without_titles(item) for item in schema]
    return schema


class View(BaseModel):
    # Built on first use: their schemas ship ready-made (server.OUTPUT_SCHEMAS), so start-up never needs them.
    model_config = ConfigDict(json_schema_extra=untitled, defer_build=True)


class Truncation(View):
    """Something a result left out to fit the context budget, and the exact call that returns it."""

    omitted: str
    count: int
    get_it: str


# ------------------------------------------------------------------------------------------------------------------
# list_flags
# ------------------------------------------------------------------------------------------------------------------


class RuleBrief(View):
    key: str
    type: str
    status: str | None
    traffic_percent: float


class EnvironmentState(View):
    on: bool = Field(description="the flag is enabled (serving its rules) here")
    status: str | None = Field(default=None, description="draft | running | paused")
    rules: dict[str, int] | None = Field(default=None, description="rule count by type")
    rule_list: list[RuleBrief] | None = Field(default=None, description="detail=full: the rules in priority order")


class FlagSummary(View):
    key: str
    name: str
    archived: bool | None = None
    description: str | None = None
    revision: int | None = None
    updated_time: datetime | None = None
    environments: dict[str, EnvironmentState]

    @classmethod
    def of(cls, flag: Flag, detail: Detail, *, rule_lists: bool = True) -> FlagSummary:
        """The flag at a detail level; ``rule_lists=False`` summarises full's rule lists as counts."""
        full = detail == "full"
        return cls(
            key=flag.key,
            name=flag.name,
            archived=flag.archived if detail != "summary" else None,
            description=(flag.description or "") if full else None,
            revision=flag.revision if full else None,
            updated_time=flag.updated_time if full else None,
            environments={key: _state(env, detail, rule_lists) for key, env in flag.environments.items()},
        )


def _state(env: FlagEnvironment, detail: Detail, rule_lists: bool) -> EnvironmentState:
    if detail == "summary":
        return EnvironmentState(on=env.enabled)
    counts: dict[str, int] = {}
    for rule in env.rules_detail:
        counts[rule.type] = counts.get(rule.type, 0) + 1
    briefs = None
    if detail == "full" and rule_lists:
        briefs = [
            RuleBrief(key=r.key, type=r.type, status=r.status, traffic_percent=r.traffic_allocation / 100)
            for r in env.rules_detail
        ]
    return EnvironmentState(on=env.enabled, status=env.status, rules=counts, rule_list=briefs)


class FlagList(View):
    project_id: str
    total_count: int = Field(description="flags matching the filters, in all pages")
    returned: int
    detail: Detail
    flags: list[FlagSummary]
    next_cursor: str | None = Field(description="pass as cursor= with the same filters for the next flags")
    truncated: list[Truncation] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------------------------------
# get_flag
# ------------------------------------------------------------------------------------------------------------------


class VariableView(View):
    key: str
    type: str
    default: str = Field(description="the default value, as Optimizely stores it (always a string)")
    description: str | None = None


class RuleView(View):
    key: str
    name: str
    type: str
    status: str | None
    enabled: bool
    audiences: list[str] = Field(description="audience ids; empty means everyone")
    traffic_percent: float = Field(description="share of the audience the rule applies to, in %")
    variations: list[str]
    primary_metric: str | None = None
    days_running: int | None = None
    experiment_id: str | None = Field(
        default=None, description="for a/b and multi-armed bandit rules: the id get_results takes"
    )

    @classmethod
    def of(cls, rule: RuleDetails) -> RuleView:
        return cls(
            key=rule.key,
            name=rule.name,
            type=rule.type,
            status=rule.status,
            enabled=rule.enabled,
            audiences=[str(a) for a in rule.audience_ids],
            traffic_percent=rule.traffic_allocation / 100,
            variations=rule.variation_names,
            primary_metric=rule.primary_metric,
            days_running=rule.days_running,
            experiment_id=str(rule.layer_experiment_id) if rule.layer_experiment_id is not None else None,
        )


class EnvironmentDetail(View):
    key: str
    name: str
    enabled: bool
    status: str | None
    production: bool = Field(description="true for the environment with priority 1")
    rules: list[RuleView] = Field(description="in priority order: the first rule that matches a user wins")
    rule_count: int
    more_rules: list[str] | None = Field(default=None, description="keys of rules left out to fit the budget")
    can_toggle: bool = Field(description="whether the caller may turn the flag on or off here")


class Permissions(View):
    """What the caller may do, read from the API's link fields (a missing link means no permission)."""

    update: bool
    archive: bool
    unarchive: bool
    delete: bool


class FlagDetail(View):
    project_id: str
    key: str
    name: str
    description: str
    archived: bool
    revision: int | None = Field(description="increases by one with every change; writes check it")
    updated_time: datetime
    variables: list[VariableView]
    environments: list[EnvironmentDetail]
    hidden_environments: list[str] = Field(
        default_factory=list, description="environments left out because environment= named another"
    )
    permissions: Permissions
    truncated: list[Truncation] = Field(default_factory=list)

    @classmethod
    def of(cls, project_id: int, flag: Flag, environment: str | None = None) -> FlagDetail:
        envs = sorted(flag.environments.values(), key=lambda e: e.priority)
        shown = [e for e in envs if environment is None or e.key == environment]
        return cls(
            project_id=str(project_id),
            key=flag.key,
            name=flag.name,
            description=flag.description or "",
            archived=flag.archived,
            revision=flag.revision,
            updated_time=flag.updated_time,
            variables=[
                VariableView(key=v.key, type=v.type, default=v.default_value, description=v.description or None)
                for v in flag.variable_definitions.values()
            ],
            environments=[
                EnvironmentDetail(
                    key=e.key,
                    name=e.name,
                    enabled=e.enabled,
                    status=e.status,
                    production=e.priority == 1,
                    rules=[RuleView.of(rule) for rule in e.rules_detail],
                    rule_count=len(e.rules_detail),
                    can_toggle=bool(e.enable_url or e.disable_url),
                )
                for e in shown
            ],
            hidden_environments=[e.key for e in envs if e not in shown],
            permissions=Permissions(
                update=flag.update_url is not None,
                archive=flag.archive_url is not None,
                unarchive=flag.unarchive_url is not None,
                delete=flag.delete_url is not None,
            ),
        )


# ------------------------------------------------------------------------------------------------------------------
# Discovery
# ------------------------------------------------------------------------------------------------------------------


class EnvironmentView(View):
    key: str
    name: str
    priority: int = Field(description="1 is production")
    archived: bool
    id: str | None

    @classmethod
    def of(cls, env: Environment) -> EnvironmentView:
        return cls(
            key=env.key,
            name=env.name,
            priority=env.priority,
            archived=env.archived,
            id=str(env.id) if env.id is not None else None,
        )


class EnvironmentList(View):
    project_id: str
    environments: list[EnvironmentView]
    truncated: list[Truncation] = Field(default_factory=list)


class ProjectView(View):
    id: str
    name: str
    platform: str | None
    status: str | None
    flags_enabled: bool = Field(description="Feature Experimentation projects: the flag tools work on these")

    @classmethod
    def of(cls, project: Project) -> ProjectView:
        return cls(
            id=str(project.id),
            name=project.name,
            platform=project.platform,
            status=project.status,
            flags_enabled=bool(project.is_flags_enabled),
        )


class ProjectList(View):
    projects: list[ProjectView]
    default_project_id: str | None = Field(description="the project tools use when project_id is not given")
    truncated: list[Truncation] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------------------------------
# Writes
# ------------------------------------------------------------------------------------------------------------------


# Any JSON value, spelled as single-type branches: an empty schema ({}) is flagged by clients as constraining nothing.
AnyJson = Annotated[
    JsonValue,
    WithJsonSchema({"anyOf": [{"type": t} for t in ("string", "number", "boolean", "object", "array", "null")]}),
]


class Change(View):
    path: str = Field(description="JSON Pointer relative to the flag")
    before: AnyJson = None
    after: AnyJson = None


WriteStatus = Literal["preview", "written", "declined", "changed", "unchanged"]
"""What a write tool's result says happened: every status, in this one place, for this view, its text and the write
tools (the three the guard shows a preview with are guard.PreviewStatus)."""


class WriteResult(View):
    status: WriteStatus = Field(
        description="preview: nothing written yet; written: done; declined: the user said no; changed: the "
        "resource changed since the preview, nothing written, here is a fresh preview; unchanged: nothing to do"
    )
    tool: str
    summary: str
    changes: list[Change] = Field(default_factory=list)
    effects: list[str] = Field(default_factory=list, description="what else happens: environments, rules")
    warnings: list[str] = Field(default_factory=list)
    revisions: dict[str, int | None] = Field(
        default_factory=dict, description="before the write for a preview, after it once written"
    )
    results: dict[str, str] = Field(default_factory=dict, description="per flag key, for bulk writes")
    confirmation_token: str | None = None
    expires_at: datetime | None = None
    next_step: str


# ------------------------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------------------------


class VariationFigures(View):
    variation: str
    id: str
    baseline: bool
    samples: int = Field(description="the metric's denominator: its samples_label (visitors, sessions, …)")
    value: float | None = Field(description="the metric's numerator: its value_label (unique conversions, revenue, …)")
    rate: float | None = Field(description="value / samples: the metric's rate_label")
    lift: float | None = Field(default=None, description="vs the baseline: a fraction if relative (0.05 = +5 %)")
    interval: list[float] | None = Field(default=None, description="confidence interval of the lift")
    significance: float | None = None
    significant: bool | None = Field(default=None, description="the interval lies entirely above or below 0")
    visitors_remaining: int | None = Field(default=None, description="estimate to reach significance; null: n/a")


class MetricResult(View):
    name: str
    role: Literal["primary", "secondary", "monitoring"]
    winning_direction: str | None
    aggregator: str | None = Field(default=None, description="Optimizely's: unique | count | sum | bounce | …")
    samples_label: str = Field(description="what each variation's samples are")
    value_label: str = Field(description="what each variation's value is")
    rate_label: str = Field(description="what each variation's rate is")
    verdict: Literal["winner", "loser", "inconclusive", "no_data", "not_applicable"] = Field(
        description="not_applicable: a multi-armed bandit, which has no significance and no baseline"
    )
    verdict_variation: str | None = Field(default=None, description="the variation the verdict names")
    variations: list[VariationFigures] = Field(default_factory=list)
    line: str | None = Field(default=None, description="one-line summary, for monitoring metrics")


class ResultsSummary(View):
    status: Literal["ready", "processing", "no_data"]
    experiment_id: str
    flag_key: str | None = None
    environment: str | None = None
    rule_key: str | None = None
    rule_type: str | None = Field(default=None, description="a/b | multi_armed_bandit; null: not found")
    start_time: datetime | None = None
    end_time: datetime | None = None
    window_shorter_than_asked: bool = False
    is_stale: bool | None = None
    days_running: int | None = None
    confidence_threshold: float | None = None
    difference_type: str | None = None
    visitors: dict[str, int] = Field(default_factory=dict, description="reach per variation")
    allocation: dict[str, float] | None = Field(default=None, description="a bandit's share of visitors per arm")
    inferred_outcome: str | None = Field(default=None, description="Optimizely's: win | loss | inconclusive")
    inferred_outcome_unavailable: str | None = Field(default=None, description="why there is no inferred outcome")
    metrics: list[MetricResult] = Field(default_factory=list, description="primary first")
    results_url: str | None = None
    note: str | None = None
    truncated: list[Truncation] = Field(default_factory=list)
