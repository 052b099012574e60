"""The sandbox's state: projects, environments, flags and their rulesets, and how the API renders them.

A flag's per-environment view (``rules_summary``, ``rules_detail``, ``enabled``, ``status``) is always rendered
from its ruleset, so the Flags and Rulesets endpoints can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EXPERIMENT_TYPES = ("a/b", "multi_armed_bandit")
RULE_TYPES = ("a/b", "multi_armed_bandit", "targeted_delivery")
VARIABLE_TYPES = ("boolean", "string", "double", "integer", "json")

# Flag properties a PATCH may change (spec: the Flag properties that are not readOnly; `key` only at creation).
WRITABLE_FLAG_FIELDS = frozenset(
    {
        "name",
        "description",
        "outlier_filtering_enabled",
        "variable_definitions",
        "archived",
        "custom_fields",
        "owner_user_id",
        "team_ids",
    }
)
# RulesetRule properties a ruleset PATCH may change.
WRITABLE_RULE_FIELDS = frozenset(
    {
        "key",
        "name",
        "description",
        "type",
        "enabled",
        "percentage_included",
        "audience_conditions",
        "allow_list",
        "variations",
        "metrics",
        "distribution_mode",
        "outcome",
        "comment",
        "group_rule",
        "deployed_variation_key",
        "deployed_td_rule_key",
        "deployed_td_rule_percentage_included",
        "deployed_td_rule_audience_conditions",
    }
)
WRITABLE_RULESET_FIELDS = frozenset({"rules", "rule_priorities", "default_variation_key"})
MAX_RULES_PER_RULESET = 100


def timestamp(moment: datetime | None = None) -> str:
    """Optimizely's timestamp format: microseconds and a ``Z``."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class EnvironmentRecord:
    key: str
    name: str
    priority: int
    id: int
    has_restricted_permissions: bool
    created_time: str
    archived: bool = False
    revision: int = 1


@dataclass
class RulesetRecord:
    """One flag's rules in one environment. Rules are RulesetRule-shaped dicts; ``days_running`` and
    ``audience_ids`` ride along for the flag view."""

    id: int
    enabled: bool = False
    status: str = "draft"
    revision: int = 1
    updated_time: str = field(default_factory=timestamp)
    rule_priorities: list[str] = field(default_factory=list)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_variation_key: str = "off"
    default_variation_name: str = "Off"


@dataclass
class FlagRecord:
    """A flag: its own fields as the API shows them, and one ruleset per environment."""

    fields: dict[str, Any]
    rulesets: dict[str, RulesetRecord]

    @property
    def key(self) -> str:
        return str(self.fields["key"])


@dataclass
class ProjectRecord:
    id: int
    account_id: int
    name: str
    environments: list[EnvironmentRecord]
    flags: dict[str, FlagRecord] = field(default_factory=dict)
    platform: str = "custom"
    is_flags_enabled: bool = True
    created: str = "2025-04-14T19:48:26.000000Z"
    description: str = ""

    def environment(self, key: str) -> EnvironmentRecord | None:
        return next((env for env in self.environments if env.key == key), None)


@dataclass
class Store:
    projects: dict[int, ProjectRecord] = field(default_factory=dict)
    next_id: int = 1_600_000

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def experiment_index(self) -> dict[int, tuple[ProjectRecord, FlagRecord, str, dict[str, Any]]]:
        """Every experiment-backed rule by its ``layer_experiment_id``."""
        index: dict[int, tuple[ProjectRecord, FlagRecord, str, dict[str, Any]]] = {}
        for project in self.projects.values():
            for flag in project.flags.values():
                for env_key, ruleset in flag.rulesets.items():
                    for rule in ruleset.rules.values():
                        exp_id = rule.get("layer_experiment_id")
                        if exp_id is not None:
                            index[int(exp_id)] = (project, flag, env_key, rule)
        return index


# ------------------------------------------------------------------------------------------------------------------
# Rendering: what the API returns. A rendering shares nested values with the store (no copies: this is the
# sandbox's hot path); every caller serialises it at once and never changes it.
# ------------------------------------------------------------------------------------------------------------------

_RULE_INTERNAL = ("days_running", "audience_ids", "created_by_user_email")


def flag_json(project: ProjectRecord, flag: FlagRecord) -> dict[str, Any]:
    f = flag.fields
    base = f"/projects/{project.id}/flags"
    out: dict[str, Any] = {
        "key": f["key"],
        "name": f["name"],
        "description": f.get("description", ""),
        "url": f"{base}/{f['key']}",
    }
    # Link fields double as permissions: an archived flag can be unarchived or deleted, not updated or archived.
    if f.get("archived"):
        out["delete_url"] = f"{base}/{f['key']}"
        out["unarchive_url"] = f"{base}/unarchived"
    else:
        out["update_url"] = base
        out["delete_url"] = f"{base}/{f['key']}"
        out["archive_url"] = f"{base}/archived"
    out["variable_definitions"] = f.get("variable_definitions", {})
    out["environments"] = {
        env.key: environment_json(project, flag, env) for env in project.environments if env.key in flag.rulesets
    }
    for name in ("custom_fields", "owner_user_id", "team_ids"):
        if name in f:
            out[name] = f[name]
    out.update(
        {
            "id": f["id"],
            "urn": f"flags.flags.optimizely.com::{f['id']}",
            "archived": bool(f.get("archived")),
            "outlier_filtering_enabled": bool(f.get("outlier_filtering_enabled")),
            "project_id": project.id,
            "created_by_user_id": f["created_by_user_email"],
            "created_by_user_email": f["created_by_user_email"],
            "account_id": project.account_id,
            "role": f.get("role", "admin"),
            "created_time": f["created_time"],
            "updated_time": f["updated_time"],
            "revision": f["revision"],
        }
    )
    return out


def environment_json(project: ProjectRecord, flag: FlagRecord, env: EnvironmentRecord) -> dict[str, Any]:
    ruleset = flag.rulesets[env.key]
    rules = [ruleset.rules[key] for key in ruleset.rule_priorities if key in ruleset.rules]
    summary: dict[str, dict[str, list[str]]] = {}
    for rule in rules:
        summary.setdefault(rule["type"], {"keys": []})["keys"].append(rule["key"])
    toggle = f"/projects/{project.id}/flags/{flag.key}/environments/{env.key}/ruleset"
    out: dict[str, Any] = {
        "key": env.key,
        "name": env.name,
        "enabled": ruleset.enabled,
        "has_restricted_permissions": env.has_restricted_permissions,
        "priority": env.priority,
        "status": ruleset.status,
        "rules_summary": summary,
        "rules_detail": [rule_detail_json(rule) for rule in rules],
        "id": env.id,
    }
    if ruleset.enabled:
        out["disable_url"] = f"{toggle}/disabled"
    else:
        out["enable_url"] = f"{toggle}/enabled"
    out["created_time"] = env.created_time
    return out


def rule_detail_json(rule: dict[str, Any]) -> dict[str, Any]:
    metrics = rule.get("metrics") or []
    variations = rule.get("variations") or {}
    return {
        "updated_time": rule["updated_time"],
        "id": rule["id"],
        "layer_experiment_id": rule.get("layer_experiment_id"),
        "key": rule["key"],
        "audience_ids": list(rule.get("audience_ids", [])),
        "primary_metric": metrics[0].get("display_title") if metrics else None,
        "variation_names": [v.get("name", v["key"]) for v in variations.values()],
        "status": rule["status"],
        "days_running": rule.get("days_running"),
        "distribution_mode": rule.get("distribution_mode", "manual"),
        "type": rule["type"],
        "fetch_results_ui_url": rule.get("fetch_results_ui_url"),
        "created_time": rule["created_time"],
        "traffic_allocation": rule.get("percentage_included", 0),
        "created_by_user_email": rule.get("created_by_user_email"),
        "enabled": bool(rule.get("enabled")),
        "name": rule["name"],
    }


def ruleset_json(project: ProjectRecord, flag: FlagRecord, env: EnvironmentRecord) -> dict[str, Any]:
    ruleset = flag.rulesets[env.key]
    url = f"/projects/{project.id}/flags/{flag.key}/environments/{env.key}/ruleset"
    out: dict[str, Any] = {
        "flag_key": flag.key,
        "environment_key": env.key,
        "environment_name": env.name,
        "environment_id": env.id,
        "id": ruleset.id,
        "urn": f"rulesets.flags.optimizely.com::{ruleset.id}",
        "url": url,
        "revision": ruleset.revision,
        "role": flag.fields.get("role", "admin"),
        "archived": bool(flag.fields.get("archived")),
        "enabled": ruleset.enabled,
        "status": ruleset.status,
        "rule_priorities": list(ruleset.rule_priorities),
        "rules": {
            key: {k: v for k, v in rule.items() if k not in _RULE_INTERNAL} for key, rule in ruleset.rules.items()
        },
        "default_variation_key": ruleset.default_variation_key,
        "default_variation_name": ruleset.default_variation_name,
        "updated_time": ruleset.updated_time,
        "fetch_flag_url": f"/projects/{project.id}/flags/{flag.key}",
    }
    if not flag.fields.get("archived"):
        out["update_url"] = url
        out["disable_url" if ruleset.enabled else "enable_url"] = (
            f"{url}/{'disabled' if ruleset.enabled else 'enabled'}"
        )
    return out


def environment_resource_json(project: ProjectRecord, env: EnvironmentRecord) -> dict[str, Any]:
    return {
        "key": env.key,
        "name": env.name,
        "archived": env.archived,
        "priority": env.priority,
        "id": env.id,
        "project_id": project.id,
        "account_id": project.account_id,
        "revision": env.revision,
        "role": "admin",
    }


def project_json(project: ProjectRecord) -> dict[str, Any]:
    return {
        "id": project.id,
        "account_id": project.account_id,
        "name": project.name,
        "description": project.description,
        "platform": project.platform,
        "status": "active",
        "is_flags_enabled": project.is_flags_enabled,
        "is_classic": False,
        "confidence_threshold": 0.9,
        "created": project.created,
        "last_modified": project.created,
    }
