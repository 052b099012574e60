"""What the tools return: compact, typed views of Optimizely's resources. These are the tools' output schemas.

Ids are strings here: JSON numbers above 2**53 lose digits in JavaScript hosts, and Optimizely's ids can be that
large. Tools accept them back as strings or numbers.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from opt_mcp.api.models import Environment, Flag, FlagEnvironment, Project, RuleDetails


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------------------------------
# list_flags
# ------------------------------------------------------------------------------------------------------------------


class EnvironmentState(View):
    on: bool = Field(description="true when the flag is enabled (serving its rules) in this environment")
    status: str | None = Field(description="draft | running | paused")
    rules: dict[str, int] = Field(description="number of rules by type (a/b, multi_armed_bandit, targeted_delivery)")


class FlagSummary(View):
    key: str
    name: str
    archived: bool
    environments: dict[str, EnvironmentState]

    @classmethod
    def of(cls, flag: Flag) -> FlagSummary:
        return cls(
            key=flag.key,
            name=flag.name,
            archived=flag.archived,
            environments={key: _state(env) for key, env in flag.environments.items()},
        )


def _state(env: FlagEnvironment) -> EnvironmentState:
    counts: dict[str, int] = {}
    for rule in env.rules_detail:
        counts[rule.type] = counts.get(rule.type, 0) + 1
    return EnvironmentState(on=env.enabled, status=env.status, rules=counts)


class FlagList(View):
    project_id: str
    total_count: int = Field(description="flags matching the filters, in all pages")
    returned: int = Field(description="flags in this result")
    flags: list[FlagSummary]
    next_cursor: str | None = Field(
        description="pass as cursor= (with the same filters) for the flags after these; null when there are no more"
    )


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
