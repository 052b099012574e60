"""What the sandbox starts with: the seed documents' project and flags, plus generated flags on demand.

Everything is deterministic from the seed number, so a test, a benchmark and a person trying the server all see
the same project.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from opt_mcp.sandbox.config import SEED_PROJECT_ID
from opt_mcp.sandbox.store import (
    EnvironmentRecord,
    FlagRecord,
    ProjectRecord,
    RulesetRecord,
    Store,
    timestamp,
)

# The seed documents' account (SEED_PROJECT_ID, the sandbox's default project, is in sandbox.config).
SEED_ACCOUNT_ID = 10886221501
# A second flags project whose id is above 2**53, so every layer proves large ids survive JSON.
MOBILE_PROJECT_ID = 9007199254740993
CLASSIC_PROJECT_ID = 20110901
MAX_ENVIRONMENTS = 6

_ENVIRONMENTS = [
    ("production", "Production", True, 101744660106841),
    ("development", "Development", False, 761744660106841),
    ("staging", "Staging", False, 801744660106841),
    ("qa", "QA", False, 811744660106841),
    ("preview", "Preview", False, 821744660106841),
    ("canary", "Canary", True, 831744660106841),
]
_AUTHOR = "docs-author@example.com"
_SEED_AUDIENCE_ID = 5340810295
_RESULTS_UI = "https://app.optimizely.com/v2/projects/{project}/results/{layer}/experiments/{experiment}"


def build_store(*, flags: int = 0, seed: int = 0, environments: int = 2, max_rules: int = 4) -> Store:
    """The sandbox's initial state: the seed project with ``flags`` generated flags added, and two more projects."""
    if not 1 <= environments <= MAX_ENVIRONMENTS:
        raise ValueError(f"environments must be between 1 and {MAX_ENVIRONMENTS}, not {environments}")
    if flags < 0:
        raise ValueError(f"flags must be 0 or more, not {flags}")
    store = Store()
    project = ProjectRecord(
        id=SEED_PROJECT_ID,
        account_id=SEED_ACCOUNT_ID,
        name="Flags API walkthrough",
        description="The project of Optimizely's Flags API documentation examples.",
        environments=_environments(environments),
    )
    store.projects[project.id] = project
    for record in _seed_flags(store, project):
        project.flags[record.key] = record
    rng = random.Random(seed)
    for index in range(flags):
        record = generate_flag(store, project, rng, index, max_rules=max_rules)
        project.flags[record.key] = record

    mobile = ProjectRecord(
        id=MOBILE_PROJECT_ID,
        account_id=SEED_ACCOUNT_ID,
        name="Mobile app",
        environments=_environments(2),
        platform="custom",
    )
    store.projects[mobile.id] = mobile
    mobile_rng = random.Random(seed + 1)
    for index in range(12):
        record = generate_flag(store, mobile, mobile_rng, index, max_rules=3)
        mobile.flags[record.key] = record
    store.projects[CLASSIC_PROJECT_ID] = ProjectRecord(
        id=CLASSIC_PROJECT_ID,
        account_id=SEED_ACCOUNT_ID,
        name="Marketing site (Web Experimentation)",
        environments=[],
        platform="web",
        is_flags_enabled=False,
    )
    return store


def _environments(count: int) -> list[EnvironmentRecord]:
    return [
        EnvironmentRecord(
            key=key,
            name=name,
            priority=priority,
            id=env_id,
            has_restricted_permissions=restricted,
            created_time="2025-04-14T19:48:26.000000Z",
        )
        for priority, (key, name, restricted, env_id) in enumerate(_ENVIRONMENTS[:count], start=1)
    ]


def _variations(store: Store, names: list[str]) -> dict[str, dict[str, Any]]:
    share = 10000 // max(1, len(names))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        key = name.lower().replace(" ", "_")
        variation_id = store.new_id()
        out[key] = {
            "key": key,
            "name": name,
            "percentage_included": share,
            "variation_id": variation_id,
            "id": variation_id,
        }
    return out


def _metric(title: str, *, direction: str = "increasing", aggregator: str = "unique") -> dict[str, Any]:
    metric: dict[str, Any] = {
        "aggregator": aggregator,
        "event_id": 20000000000 + (sum(map(ord, title)) * 7919) % 1000000000,
        "event_type": "custom",
        "scope": "visitor",
        "winning_direction": direction,
        "display_title": title,
    }
    if aggregator == "sum":
        metric["field"] = "revenue"
    return metric


def make_rule(
    store: Store,
    project: ProjectRecord,
    *,
    key: str,
    name: str,
    rule_type: str,
    status: str,
    enabled: bool,
    variations: list[str],
    metrics: list[dict[str, Any]],
    created_time: str,
    updated_time: str,
    days_running: int | None = None,
    percentage_included: int = 10000,
    audience_ids: list[int] | None = None,
    rule_id: int | None = None,
) -> dict[str, Any]:
    """A RulesetRule-shaped rule; experiment types get the ids that link them to v2 results."""
    rule_id = rule_id or store.new_id()
    rule: dict[str, Any] = {
        "key": key,
        "name": name,
        "type": rule_type,
        "description": "",
        "id": rule_id,
        "urn": f"rules.flags.optimizely.com::{rule_id}",
        "revision": 1,
        "enabled": enabled,
        "archived": False,
        "status": status,
        "percentage_included": percentage_included,
        "audience_conditions": ["or", *({"audience_id": a} for a in audience_ids)] if audience_ids else [],
        "audience_ids": list(audience_ids or []),
        "variations": _variations(store, variations),
        "metrics": metrics,
        "distribution_mode": "stats_accelerator" if rule_type == "multi_armed_bandit" else "manual",
        "created_time": created_time,
        "updated_time": updated_time,
        "created_by_user_email": _AUTHOR,
        "days_running": days_running,
    }
    if rule_type in ("a/b", "multi_armed_bandit"):
        layer_id = 9300001000000 + store.new_id()
        experiment_id = 9300002000000 + store.new_id()
        rule["layer_id"] = layer_id
        rule["layer_experiment_id"] = experiment_id
        rule["report_key"] = f"{key}-{experiment_id}"
        first = next(iter(rule["variations"].values()), None)
        rule["baseline_variation_id"] = first["variation_id"] if first else None
        rule["fetch_results_ui_url"] = (
            None
            if status == "draft"
            else _RESULTS_UI.format(project=project.id, layer=layer_id, experiment=experiment_id)
        )
    else:
        rule["layer_experiment_id"] = None
        rule["fetch_results_ui_url"] = None
    return rule


def _ruleset(store: Store, rules: list[dict[str, Any]], *, enabled: bool, status: str, updated: str) -> RulesetRecord:
    return RulesetRecord(
        id=store.new_id(),
        enabled=enabled,
        status=status,
        updated_time=updated,
        rule_priorities=[rule["key"] for rule in rules],
        rules={rule["key"]: rule for rule in rules},
    )


def _variable(key: str, var_type: str, default: str, description: str, created: str, updated: str) -> dict[str, Any]:
    return {
        "key": key,
        "description": description,
        "type": var_type,
        "default_value": default,
        "created_time": created,
        "updated_time": updated,
    }


def _seed_flags(store: Store, project: ProjectRecord) -> list[FlagRecord]:
    env_keys = [env.key for env in project.environments]

    def rulesets(specific: dict[str, RulesetRecord]) -> dict[str, RulesetRecord]:
        return {
            key: specific.get(key) or _ruleset(store, [], enabled=False, status="draft", updated=timestamp())
            for key in env_keys
        }

    doc_rules = [
        make_rule(
            store,
            project,
            key="already-exisiting-a-b-test",
            name="Already-exisiting-a-b-test",
            rule_type="a/b",
            status="draft",
            enabled=False,
            variations=["Off", "On"],
            metrics=[_metric("PDP Page Views")],
            created_time="2025-09-12T16:44:11.824135Z",
            updated_time="2025-09-12T17:03:20.001335Z",
            audience_ids=[_SEED_AUDIENCE_ID],
            rule_id=1598646,
        ),
        make_rule(
            store,
            project,
            key="mab_test",
            name="MAB test",
            rule_type="multi_armed_bandit",
            status="draft",
            enabled=False,
            variations=["Off", "On"],
            metrics=[_metric("PDP Page Views")],
            created_time="2025-09-12T16:50:02.000000Z",
            updated_time="2025-09-12T16:50:02.000000Z",
        ),
    ]
    doc_test_flag = FlagRecord(
        fields={
            "key": "doc-test-flag",
            "name": "Doc test flag",
            "description": "Flag created through the API",
            "id": 419947,
            "archived": False,
            "outlier_filtering_enabled": True,
            "variable_definitions": {
                "show_amounts": _variable(
                    "show_amounts",
                    "boolean",
                    "false",
                    "If inventory is shown, this variable controls what is displayed: available/unavailable vs "
                    "the actual inventory amount.",
                    "2025-09-12T16:23:14.258485Z",
                    "2025-09-12T16:23:14.258487Z",
                )
            },
            "created_by_user_email": _AUTHOR,
            "role": "admin",
            "created_time": "2025-09-12T16:16:10.260857Z",
            "updated_time": "2025-09-12T17:45:10.487636Z",
            "revision": 1,
        },
        rulesets=rulesets(
            {
                "development": _ruleset(
                    store, doc_rules, enabled=False, status="draft", updated="2025-09-12T17:03:20.001335Z"
                )
            }
        ),
    )
    homepage_hero = FlagRecord(
        fields={
            "key": "homepage_hero",
            "name": "Homepage hero",
            "description": "",
            "id": 419948,
            "archived": False,
            "outlier_filtering_enabled": False,
            "variable_definitions": {},
            "created_by_user_email": _AUTHOR,
            "role": "admin",
            "created_time": "2025-05-22T08:56:42.894695Z",
            "updated_time": "2025-05-22T09:01:47.500000Z",
            "revision": 1,
        },
        rulesets=rulesets({}),
    )
    sort_created, sort_updated = "2025-04-14T21:47:46.837014Z", "2025-04-14T21:47:46.837015Z"
    product_sort = FlagRecord(
        fields={
            "key": "product_sort",
            "name": "Product sort",
            "description": "",
            "id": 419946,
            "archived": False,
            "outlier_filtering_enabled": False,
            "variable_definitions": {
                "display_sort_algorithm": _variable(
                    "display_sort_algorithm",
                    "boolean",
                    "true",
                    "Whether to display the sorting algorithm to the user.",
                    sort_created,
                    sort_created,
                ),
                "sort_algorithm": _variable(
                    "sort_algorithm",
                    "string",
                    "our popular first",
                    "The name of the sorting algorithm to be tested.",
                    sort_created,
                    sort_updated,
                ),
                "sort_algorithm_position": _variable(
                    "sort_algorithm_position",
                    "integer",
                    "1",
                    "The position of the sorting algorithm in the list of sorting algorithms.",
                    "2025-04-14T21:47:46.837011Z",
                    "2025-04-14T21:47:46.837013Z",
                ),
                "sort_method": _variable(
                    "sort_method",
                    "string",
                    "alphabetical",
                    "",
                    "2025-04-29T20:53:37.811287Z",
                    "2025-04-29T20:53:37.811292Z",
                ),
            },
            "created_by_user_email": _AUTHOR,
            "role": "admin",
            "created_time": "2025-04-14T19:54:57.618260Z",
            "updated_time": "2025-04-29T21:10:23.587597Z",
            "revision": 3,
        },
        rulesets=rulesets(
            {
                "production": _ruleset(
                    store,
                    [
                        make_rule(
                            store,
                            project,
                            key="experiment",
                            name="experiment",
                            rule_type="a/b",
                            status="running",
                            enabled=True,
                            variations=["Off", "On"],
                            metrics=[
                                _metric("purchase"),
                                _metric("revenue", aggregator="sum"),
                                _metric("bounce rate", direction="decreasing"),
                            ],
                            created_time="2025-04-29T21:10:01.059880Z",
                            updated_time="2025-04-29T21:10:26.370340Z",
                            days_running=135,
                        )
                    ],
                    enabled=True,
                    status="running",
                    updated="2025-04-29T21:10:26.370340Z",
                ),
                "development": _ruleset(
                    store,
                    [
                        make_rule(
                            store,
                            project,
                            key="best_sort_method",
                            name="Best sort method",
                            rule_type="a/b",
                            status="draft",
                            enabled=False,
                            variations=["Off"],
                            metrics=[_metric("Cross-project-metric")],
                            created_time="2025-04-14T21:44:42.781693Z",
                            updated_time="2025-04-14T21:49:39.008847Z",
                            rule_id=1291104,
                        )
                    ],
                    enabled=False,
                    status="draft",
                    updated="2025-04-14T21:49:39.008847Z",
                ),
            }
        ),
    )
    return [doc_test_flag, homepage_hero, product_sort]


# ------------------------------------------------------------------------------------------------------------------
# Generated flags
# ------------------------------------------------------------------------------------------------------------------

_ADJECTIVES = [
    "new", "beta", "smart", "fast", "dark", "legacy", "holiday", "express", "guest", "premium",
    "mobile", "instant", "social", "local", "bulk", "one_click", "adaptive", "seasonal",
]  # fmt: skip
_NOUNS = [
    "checkout", "search", "banner", "onboarding", "pricing", "cart", "recommendations", "navbar", "footer",
    "login", "profile", "video", "reviews", "shipping", "coupon", "wishlist", "payments", "homepage",
]  # fmt: skip
_METRICS = ["purchase", "add to cart", "signup", "page views", "revenue", "bounce rate", "checkout started"]
# How each generated metric aggregates (v2 spec aggregator): revenue is summed, page views counted in total, the rest
# unique conversions; "bounce rate" is a custom event here (the ``bounce`` aggregator needs a Web page's event).
_AGGREGATORS = {"revenue": "sum", "page views": "count"}
_EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def generate_flag(
    store: Store, project: ProjectRecord, rng: random.Random, index: int, *, max_rules: int
) -> FlagRecord:
    """A realistic flag: variables, and per environment a state and 0..max_rules rules."""
    adjective, noun = rng.choice(_ADJECTIVES), rng.choice(_NOUNS)
    key = f"{adjective}_{noun}_{index:04d}"
    created = _EPOCH + timedelta(minutes=rng.randint(0, 600_000))
    updated = created + timedelta(minutes=rng.randint(0, 100_000))
    variables: dict[str, Any] = {}
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        var_type = rng.choice(("boolean", "string", "integer", "double", "json"))
        default = {
            "boolean": rng.choice(("true", "false")),
            "string": rng.choice(("control", "variant_a", "blue", "compact layout")),
            "integer": str(rng.randint(0, 50)),
            "double": f"{rng.uniform(0, 10):.2f}",
            "json": '{"enabled": true, "limit": 10}',
        }[var_type]
        var_key = f"{rng.choice(('show', 'max', 'use', 'theme', 'limit'))}_{rng.choice(_NOUNS)}"
        variables[var_key] = _variable(
            var_key, var_type, default, f"Controls {var_key.replace('_', ' ')}.", timestamp(created), timestamp(updated)
        )
    archived = rng.random() < 0.05
    rulesets: dict[str, RulesetRecord] = {}
    for env in project.environments:
        status = "draft" if archived else rng.choices(("draft", "running", "paused"), (4, 5, 1))[0]
        rules = []
        for position in range(rng.randint(0, max_rules)):
            rule_type = rng.choices(("targeted_delivery", "a/b", "multi_armed_bandit"), (6, 3, 1))[0]
            running = status == "running" and rng.random() < 0.8
            rule_status = "running" if running else rng.choice(("draft", "draft", "concluded", "paused"))
            experiment = rule_type != "targeted_delivery"
            metric_names = rng.sample(_METRICS, rng.randint(1, 4)) if experiment else []
            rules.append(
                make_rule(
                    store,
                    project,
                    key=f"{env.key[:4]}_{rule_type.replace('/', '').replace('_', '')[:4]}_{position}",
                    name=f"{rule_type.replace('_', ' ').title()} {position + 1}",
                    rule_type=rule_type,
                    status=rule_status,
                    enabled=running,
                    variations=["Off", "On"] if rule_type == "targeted_delivery" else ["Control", "Treatment"],
                    metrics=[
                        _metric(
                            m,
                            direction="decreasing" if m == "bounce rate" else "increasing",
                            aggregator=_AGGREGATORS.get(m, "unique"),
                        )
                        for m in metric_names
                    ],
                    created_time=timestamp(created),
                    updated_time=timestamp(updated),
                    days_running=rng.randint(0, 120) if rule_status in ("running", "paused", "concluded") else None,
                    percentage_included=rng.choice((10000, 5000, 2500, 1000)),
                    audience_ids=[rng.randint(10**9, 10**10)] if rng.random() < 0.4 else [],
                )
            )
        rulesets[env.key] = _ruleset(
            store, rules, enabled=status == "running", status=status, updated=timestamp(updated)
        )
    return FlagRecord(
        fields={
            "key": key,
            "name": key.replace("_", " ").capitalize(),
            "description": rng.choice(("", f"Rollout of the {noun} change.", f"Experiment on the {adjective} {noun}.")),
            "id": store.new_id(),
            "archived": archived,
            "outlier_filtering_enabled": rng.random() < 0.2,
            "variable_definitions": variables,
            "created_by_user_email": _AUTHOR,
            "role": "admin",
            "created_time": timestamp(created),
            "updated_time": timestamp(updated),
            "revision": rng.randint(1, 12),
        },
        rulesets=rulesets,
    )
