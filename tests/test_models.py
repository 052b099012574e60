"""The API models against the official specs and the seed documents' real responses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from opt_mcp.api import models as m
from tests.conftest import DATA, load

FLAGS_SPEC = json.loads((DATA / "specs" / "flags-v1.openapi.json").read_text())["components"]["schemas"]
V2_SPEC = json.loads((DATA / "specs" / "v2.openapi.json").read_text())["components"]["schemas"]

# Each model and the spec schema it mirrors.
MODELS: list[tuple[type[BaseModel], dict[str, Any], str]] = [
    (m.Flag, FLAGS_SPEC, "Flag"),
    (m.FlagEnvironment, FLAGS_SPEC, "FlagEnvironment"),
    (m.RuleDetails, FLAGS_SPEC, "RuleDetails"),
    (m.RulesSummary, FLAGS_SPEC, "RulesetSummary"),
    (m.VariableDefinition, FLAGS_SPEC, "VariableDefinition"),
    (m.FlagsPage, FLAGS_SPEC, "Flags"),
    (m.Environment, FLAGS_SPEC, "Environment"),
    (m.EnvironmentsPage, FLAGS_SPEC, "Environments"),
    (m.Ruleset, FLAGS_SPEC, "Ruleset"),
    (m.RulesetRule, FLAGS_SPEC, "RulesetRule"),
    (m.RulesetRuleVariation, FLAGS_SPEC, "RulesetRuleVariation"),
    (m.ProblemDetail, FLAGS_SPEC, "ProblemDetail"),
    (m.V2Error, V2_SPEC, "Error"),
    (m.Project, V2_SPEC, "Project"),
    (m.ExperimentResults, V2_SPEC, "ExperimentResults"),
    (m.ExperimentMetricResults, V2_SPEC, "ExperimentMetricResults"),
    (m.VariantResults, V2_SPEC, "VariantResults"),
    (m.Datapoint, V2_SPEC, "Datapoint"),
    (m.StatsConfig, V2_SPEC, "StatsConfig"),
    (m.ExperimentVariationReach, V2_SPEC, "ExperimentVariationReach"),
    (m.VariationReach, V2_SPEC, "VariationReach"),
    (m.MetricConclusion, V2_SPEC, "ExperimentMetricConclusion"),
    (m.CompoundSubMetric, V2_SPEC, "CompoundSubMetric"),
    (m.ExperimentResultsReport, V2_SPEC, "ExperimentResultsReport"),
]

# Spec properties deliberately not modelled as fields (they are still kept, as extra fields, when present).
IGNORED_SPEC_PROPERTIES: dict[tuple[str, str], str] = {}

# Model fields the spec does not declare, each with the reason it exists.
EXTRA_MODEL_FIELDS: dict[tuple[str, str], str] = {
    ("Flag", "created_by_user_id"): "returned by the live API (holding an email) though the spec omits it",
    ("VariableDefinition", "created_time"): "returned by the live API (seed 004) though the spec omits it",
    ("VariableDefinition", "updated_time"): "as above",
}

# Spec-required properties the model accepts as missing, each with the reason.
LENIENT_REQUIRED: dict[tuple[str, str], str] = {
    ("ProblemDetail", "type"): "a real 403 example has no type",
    ("ProblemDetail", "title"): "error bodies are parsed defensively; a missing field must not hide the error",
    ("ProblemDetail", "status"): "as above",
    ("ProblemDetail", "detail"): "as above",
    ("Flag", "environments"): "an empty map is a valid default for a flag with no environments",
    ("Ruleset", "rule_priorities"): "an empty ruleset has none",
    ("RuleDetails", "audience_ids"): "empty means everyone; tolerated when absent",
    ("RuleDetails", "variation_names"): "tolerated when absent",
}


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = dict(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        props.update(part.get("properties", {}))
    return props


@pytest.mark.parametrize(("model", "spec", "name"), MODELS, ids=[name for _, _, name in MODELS])
def test_every_spec_property_is_a_field_or_explicitly_ignored(
    model: type[BaseModel], spec: dict[str, Any], name: str
) -> None:
    declared = set(_properties(spec[name]))
    fields = set(model.model_fields)
    missing = {p for p in declared - fields if (name, p) not in IGNORED_SPEC_PROPERTIES}
    assert not missing, f"{name}: spec properties with no model field and no ignore entry: {sorted(missing)}"
    undeclared = {f for f in fields - declared if (name, f) not in EXTRA_MODEL_FIELDS}
    assert not undeclared, f"{model.__name__}: fields the spec does not declare: {sorted(undeclared)}"


@pytest.mark.parametrize(("model", "spec", "name"), MODELS, ids=[name for _, _, name in MODELS])
def test_spec_required_properties_are_required(model: type[BaseModel], spec: dict[str, Any], name: str) -> None:
    for prop in spec[name].get("required", []):
        if (name, prop) in LENIENT_REQUIRED:
            continue
        assert model.model_fields[prop].is_required(), f"{name}.{prop} is required by the spec"


def test_ignore_lists_name_real_properties() -> None:
    """A stale ignore entry would hide drift: each must name a property the spec (or the model) still has."""
    specs = {name: spec for _, spec, name in MODELS}
    for schema, prop in IGNORED_SPEC_PROPERTIES:
        assert prop in _properties(specs[schema][schema])
    for schema, prop in LENIENT_REQUIRED:
        assert prop in specs[schema][schema].get("required", [])


@pytest.mark.parametrize(
    ("name", "parse"),
    [
        ("list_flags", m.FlagsPage.model_validate),
        ("get_flag", m.Flag.model_validate),
        ("patch_flags", lambda d: {k: m.Flag.model_validate(v) for k, v in d.items()}),
        ("archive_flags", lambda d: {k: m.Flag.model_validate(v) for k, v in d.items()}),
        ("unarchive_flags", lambda d: {k: m.Flag.model_validate(v) for k, v in d.items()}),
    ],
)
def test_seed_response_examples_parse(name: str, parse: Any) -> None:
    data = load(f"seed004/{name}.json")
    parsed = parse(data)
    flags = (
        parsed.items if isinstance(parsed, m.FlagsPage) else parsed.values() if isinstance(parsed, dict) else [parsed]
    )
    for flag in flags:
        assert flag.environments["production"].priority == 1
        assert flag.revision is not None and flag.revision >= 1


def test_seed_list_example_reads_as_documented() -> None:
    page = m.FlagsPage.model_validate(load("seed004/list_flags.json"))
    assert (page.count, page.total_count, page.total_pages, page.next_link) == (3, 3, 1, None)
    product_sort = next(f for f in page.items if f.key == "product_sort")
    prod = product_sort.environments["production"]
    assert prod.enabled and prod.status == "running" and prod.disable_url and not prod.enable_url
    rule = prod.rules_detail[0]
    assert (rule.type, rule.days_running, rule.traffic_allocation, rule.layer_experiment_id) == (
        "a/b",
        135,
        10000,
        9300002397982,
    )
    assert product_sort.variable_definitions["sort_algorithm_position"].default_value == "1"
    dev_rules = next(f for f in page.items if f.key == "doc-test-flag").environments["development"].rules_summary
    assert dev_rules["multi_armed_bandit"].keys == ["mab_test"]


def test_archived_example_has_no_update_link() -> None:
    flag = m.Flag.model_validate(load("seed004/archive_flags.json")["homepage_hero"])
    assert flag.archived and flag.unarchive_url and flag.update_url is None and flag.archive_url is None


def test_unknown_fields_are_kept_not_rejected() -> None:
    data = load("seed004/get_flag.json")
    data["brand_new_field"] = {"nested": [1, 2]}
    data["environments"]["production"]["new_env_field"] = "x"
    data["environments"]["production"]["status"] = "scheduled"  # a status this code has never heard of
    flag = m.Flag.model_validate(data)
    dumped = flag.model_dump(mode="json")
    assert dumped["brand_new_field"] == {"nested": [1, 2]}
    assert dumped["environments"]["production"]["new_env_field"] == "x"
    assert flag.environments["production"].status == "scheduled"


def test_ids_above_2_to_the_53_survive_json() -> None:
    big = 2**63 - 25
    data = load("seed004/get_flag.json")
    data["id"] = big
    data["project_id"] = big - 1
    data["environments"]["development"]["rules_detail"][0]["layer_experiment_id"] = big - 2
    flag = m.Flag.model_validate_json(json.dumps(data))
    again = json.loads(flag.model_dump_json())
    assert again["id"] == big and again["project_id"] == big - 1
    assert again["environments"]["development"]["rules_detail"][0]["layer_experiment_id"] == big - 2


def test_next_url_as_a_bare_string_is_tolerated() -> None:
    data = load("seed004/list_flags.json")
    data["next_url"] = "/projects/1/flags?page_token=abc#2"
    assert m.FlagsPage.model_validate(data).next_link == "/projects/1/flags?page_token=abc#2"


def test_real_v2_results_example_parses() -> None:
    results = m.ExperimentResults.model_validate(load("v2_results_example.json"))
    metric = results.metrics[0]
    baseline = metric.results["22025721712"]
    variant = metric.results["22011971374"]
    assert baseline.is_baseline and baseline.lift is None  # the baseline has no lift
    assert variant.lift is not None and variant.lift.is_significant is False and variant.lift.lift_status == "worse"
    assert isinstance(variant.value, float)  # a float although the spec says int64
    assert results.stats_config is not None and results.stats_config.difference_type == "relative"
    assert results.reach is not None and results.reach.total_count == 976


def test_v2_error_body_parses_with_numeric_code() -> None:
    assert m.V2Error.model_validate(load("v2_error_example.json")).uuid
    assert m.V2Error.model_validate({"code": 404, "message": "x"}).code == "404"
