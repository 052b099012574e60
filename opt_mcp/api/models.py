"""Pydantic models of the Optimizely resources opt-mcp reads and writes.

Field names and types follow the official OpenAPI descriptions (`flags-v1.openapi.json`, `v2.openapi.json`).
Unknown fields are kept (``extra="allow"``): Optimizely adds response properties without notice and calls that a
backwards-compatible change. Values of documented enums are typed ``str`` for the same reason: a new rule type or
status must not make a whole page of flags unreadable.

Ids are Python ints, so values above 2**53 are exact here and in the JSON pydantic writes.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator


class ApiModel(BaseModel):
    """Base of every API model: unknown fields are kept, never rejected."""

    # Built on first use, not at import: the server answers tools/list before it ever reads an API answer.
    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)


def _as_link_list(value: Any) -> Any:
    # The spec types next_url/prev_url as arrays; tolerate a bare string from an older deployment.
    if isinstance(value, str):
        return [value]
    return value


def _as_condition_list(value: Any) -> Any:
    """The spec's ``AudienceConditions`` is an array or the same array as a JSON string, and a rule targets
    everyone with the string ``"everyone"`` (or no field): every form reads as the array, ``[]`` for everyone.
    Anything else reads as None (unknown): nothing opt-mcp shows comes from this field (a rule's audiences come
    from ``audience_ids``), so an odd value must not make a whole ruleset unreadable."""
    if not isinstance(value, str):
        return value if value is None or isinstance(value, list) else None
    if value.strip().lower() in ("everyone", ""):
        return []
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    if parsed == "everyone":
        return []
    return parsed if isinstance(parsed, list) else None


AudienceConditions = Annotated[list[Any] | None, BeforeValidator(_as_condition_list)]


# --------------------------------------------------------------------------------------------------------------
# Flags API v1
# --------------------------------------------------------------------------------------------------------------


class VariableDefinition(ApiModel):
    """A flag variable. ``default_value`` is always a string, whatever ``type`` says."""

    key: str
    type: str = Field(description="boolean | string | double | integer | json")
    default_value: str
    description: str | None = None
    created_time: datetime | None = None
    updated_time: datetime | None = None
    revision: int | None = None
    role: str | None = None


class RulesSummary(ApiModel):
    """One entry of a flag environment's ``rules_summary`` map (spec: ``RulesetSummary``)."""

    keys: list[str] = Field(default_factory=list)


class RuleDetails(ApiModel):
    """A rule as embedded in a flag's environment (``rules_detail[]``)."""

    key: str
    name: str
    type: str = Field(description="a/b | multi_armed_bandit | targeted_delivery")
    enabled: bool
    audience_ids: list[int] = Field(default_factory=list)
    traffic_allocation: int = Field(description="basis points: 10000 = 100 %")
    variation_names: list[str] = Field(default_factory=list)
    id: int | None = None
    layer_experiment_id: int | None = None
    status: str | None = Field(default=None, description="draft | running | paused | concluded")
    primary_metric: str | None = None
    distribution_mode: str | None = Field(default=None, description="manual | stats_accelerator")
    days_running: int | None = None
    fetch_results_ui_url: str | None = None
    created_by_user_email: str | None = None
    created_time: datetime | None = None
    updated_time: datetime | None = None


class FlagEnvironment(ApiModel):
    """A flag's state in one environment (a value of ``Flag.environments``)."""

    key: str
    name: str
    priority: int
    enabled: bool = False
    status: str | None = Field(default=None, description="draft | running | paused")
    has_restricted_permissions: bool | None = None
    rules_summary: dict[str, RulesSummary] = Field(default_factory=dict)
    rules_detail: list[RuleDetails] = Field(default_factory=list)
    id: int | None = None
    created_time: datetime | None = None
    enable_url: str | None = None
    disable_url: str | None = None


class Flag(ApiModel):
    """A feature flag with every environment it is in."""

    id: int
    urn: str
    key: str
    name: str
    created_time: datetime
    updated_time: datetime
    environments: dict[str, FlagEnvironment] = Field(default_factory=dict)
    url: str
    description: str | None = None
    archived: bool = False
    outlier_filtering_enabled: bool | None = None
    variable_definitions: dict[str, VariableDefinition] = Field(default_factory=dict)
    revision: int | None = None
    role: str | None = None
    project_id: int | None = None
    account_id: int | None = None
    created_by_user_email: str | None = None
    # Not in the spec, but returned by the live API (and it holds an email there).
    created_by_user_id: str | None = None
    custom_fields: dict[str, Any] | None = None
    owner_user_id: str | None = None
    team_ids: list[str] | None = None
    # Link fields: a missing link means the caller may not perform that action.
    update_url: str | None = None
    delete_url: str | None = None
    archive_url: str | None = None
    unarchive_url: str | None = None


class _Page(ApiModel):
    """The Flags API list envelope. Links are relative to ``/flags/v1``."""

    url: str
    first_url: str
    last_url: str
    count: int
    page: int
    total_count: int
    total_pages: int
    next_url: list[str] | None = None
    prev_url: list[str] | None = None
    filter_url: str | None = None
    reset_url: str | None = None

    _coerce_links = field_validator("next_url", "prev_url", mode="before")(_as_link_list)

    @property
    def next_link(self) -> str | None:
        """The link to the page right after this one (``next_url[0]``), or None on the last page."""
        return self.next_url[0] if self.next_url else None


class FlagsPage(_Page):
    """One page of ``GET /projects/{project_id}/flags`` (spec: ``Flags``)."""

    items: list[Flag]
    create_url: str | None = None
    fetch_flag_url: str | None = None
    sort_url: str | None = None


class Environment(ApiModel):
    """A project environment (``GET /projects/{project_id}/environments``)."""

    key: str
    name: str
    archived: bool
    priority: int
    project_id: int
    id: int | None = None
    account_id: int | None = None
    revision: int | None = None
    role: str | None = None


class EnvironmentsPage(_Page):
    """One page of environments (spec: ``Environments``)."""

    items: list[Environment]


class RulesetRuleVariation(ApiModel):
    key: str
    name: str | None = None
    percentage_included: int = 0
    id: int | None = None
    revision: int | None = None


class RulesetRule(ApiModel):
    """A rule as held by a ruleset: targeting, variations and metrics in full."""

    key: str
    name: str
    type: str
    id: int | None = None
    urn: str | None = None
    revision: int | None = None
    description: str | None = None
    enabled: bool | None = None
    archived: bool | None = None
    status: str | None = None
    outcome: str | None = None
    comment: str | None = None
    percentage_included: int | None = None
    audience_conditions: AudienceConditions = None
    allow_list: dict[str, Any] | None = None
    variations: dict[str, RulesetRuleVariation] = Field(default_factory=dict)
    baseline_variation_id: int | None = None
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    distribution_mode: str | None = None
    layer_experiment_id: int | None = None
    layer_id: int | None = None
    report_key: str | None = None
    fetch_results_ui_url: str | None = None
    group_rule: dict[str, Any] | None = None
    group_remaining_traffic_allocation: int | None = None
    deployed_td_rule_audience_conditions: AudienceConditions = None
    deployed_td_rule_key: str | None = None
    deployed_td_rule_percentage_included: int | None = None
    deployed_variation_key: str | None = None
    created_time: datetime | None = None
    updated_time: datetime | None = None


class Ruleset(ApiModel):
    """A flag's rules in one environment, in priority order."""

    flag_key: str
    environment_key: str
    rule_priorities: list[str] = Field(default_factory=list)
    urn: str
    url: str
    id: int | None = None
    revision: int | None = None
    role: str | None = None
    archived: bool | None = None
    enabled: bool = False
    status: str | None = None
    rules: dict[str, RulesetRule] = Field(default_factory=dict)
    default_variation_key: str | None = None
    default_variation_name: str | None = None
    environment_id: int | None = None
    environment_name: str | None = None
    updated_time: datetime | None = None
    update_url: str | None = None
    enable_url: str | None = None
    disable_url: str | None = None
    fetch_flag_url: str | None = None
    fetch_default_variation_url: str | None = None

    @field_validator("rules", mode="before")
    @classmethod
    def _no_rules(cls, value: Any) -> Any:
        # An empty ruleset has been seen with ``"rules": null``.
        return {} if value is None else value


class ProblemDetail(ApiModel):
    """The Flags API's RFC 7807 error body. Every field may be missing (a 403 example has no ``uuid``)."""

    type: str | None = None
    title: str | None = None
    status: int | None = None
    detail: str | None = None
    uuid: str | None = None


# --------------------------------------------------------------------------------------------------------------
# REST API v2
# --------------------------------------------------------------------------------------------------------------


class V2Error(ApiModel):
    """The v2 error body: ``{code, message, uuid}`` (spec: ``Error``)."""

    code: str | None = None
    message: str | None = None
    uuid: str | None = None
    messages: dict[str, Any] | None = None

    @field_validator("code", mode="before")
    @classmethod
    def _code_as_text(cls, value: Any) -> Any:
        # "This is sometimes the HTTP status code": seen as a number as well as a string.
        return str(value) if isinstance(value, int) else value


class Project(ApiModel):
    """A v2 project. Flags-enabled projects (``is_flags_enabled``) are the ones the Flags API serves."""

    name: str
    id: int | None = None
    account_id: int | None = None
    description: str | None = None
    status: str | None = Field(default=None, description="active | archived")
    platform: str | None = None
    is_flags_enabled: bool | None = None
    is_classic: bool | None = None
    confidence_threshold: float | None = None
    created: datetime | None = None
    last_modified: datetime | None = None
    sdks: list[str] | None = None
    dcp_service_id: int | None = None
    socket_token: str | None = None
    third_party_platform: str | None = None
    web_snippet: dict[str, Any] | None = None


# Optimizely's sentinel for "not available" in Datapoint.visitors_remaining (max int64).
NOT_AVAILABLE_INT64 = 9223372036854775807


class Datapoint(ApiModel):
    """A lift or total-increase estimate with its confidence interval."""

    value: float | None = None
    confidence_interval: list[float] | None = None
    confidence_interval_scaled: list[float] | None = None
    value_scaled: float | None = None
    is_significant: bool | None = None
    significance: float | None = None
    lift_status: str | None = Field(default=None, description="equal | better | worse (not a verdict)")
    is_most_conclusive: bool | None = None
    visitors_remaining: int | None = None
    end_of_epoch: bool | None = None


class VariantResults(ApiModel):
    """One variation's figures for one metric. The baseline has no ``lift``."""

    variation_id: str | None = None
    name: str | None = None
    is_baseline: bool = False
    level: str | None = None
    experiment_id: int | None = None
    rate: float | None = None
    samples: float | None = None
    value: float | None = None
    variance: float | None = None
    lift: Datapoint | None = None
    total_increase: Datapoint | None = None

    @field_validator("variation_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class MetricConclusion(ApiModel):
    """Spec: ``ExperimentMetricConclusion``; variation ids of a significant winner or loser."""

    winner: str | None = None
    loser: str | None = None


class CompoundSubMetric(ApiModel):
    aggregator: str | None = None
    event_id: int | None = None
    event_type: str | None = None
    field: str | None = None
    scope: str | None = None


class ExperimentMetricResults(ApiModel):
    """One metric's results; ``results`` is keyed by variation id (or ``baseline``)."""

    name: str | None = None
    event_id: int | None = None
    aggregator: str | None = None
    field: str | None = None
    scope: str | None = None
    winning_direction: str | None = Field(default=None, description="increasing | decreasing")
    time_window: str | None = None
    event_properties: dict[str, Any] | None = None
    metrics: list[CompoundSubMetric] | None = None
    conclusion: MetricConclusion | None = None
    results: dict[str, VariantResults] = Field(default_factory=dict)


class StatsConfig(ApiModel):
    confidence_level: float | None = None
    difference_type: str | None = Field(default=None, description="absolute | relative")
    epoch_enabled: bool | None = None


class VariationReach(ApiModel):
    variation_id: str | None = None
    name: str | None = None
    count: int | None = None
    variation_reach: float | None = None


class ExperimentVariationReach(ApiModel):
    total_count: int | None = None
    baseline_count: int | None = None
    baseline_reach: float | None = None
    treatment_count: int | None = None
    treatment_reach: float | None = None
    variations: dict[str, VariationReach] = Field(default_factory=dict)


class ExperimentResults(ApiModel):
    """``GET /v2/experiments/{experiment_id}/results``. ``metrics[0]`` is the primary metric."""

    experiment_id: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    confidence_threshold: float | None = None
    is_stale: bool | None = None
    stats_config: StatsConfig | None = None
    reach: ExperimentVariationReach | None = None
    metrics: list[ExperimentMetricResults] = Field(default_factory=list)


class ExperimentResultsReport(ApiModel):
    """``GET /v2/experiments/{experiment_id}/report``: Optimizely's inferred outcome."""

    experiment_id: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    inferred_outcome: str | None = Field(default=None, description="win | loss | inconclusive")


class ExperimentRule(ApiModel):
    """Flags API ``GET /projects/{project_id}/rules/{experiment_id}`` (spec: ``Rule``): the flag rule behind a v2
    experiment id, with the keys of its flag and environment. Only what names the rule is read; the rest is kept."""

    key: str
    name: str | None = None
    type: str | None = Field(default=None, description="a/b | multi_armed_bandit | targeted_delivery")
    id: int | None = None
    flag_key: str | None = None
    flag_name: str | None = None
    environment_key: str | None = None
    environment_name: str | None = None
    status: str | None = None
    layer_experiment_id: int | None = None
    fetch_results_ui_url: str | None = None
