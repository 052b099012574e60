"""get_results' contract with Optimizely's results endpoints, each point pinned from both sides: the client's
requests; /report asked with the window and baseline of /results, and its failure not get_results' failure;
end_time's rounding to 5 minutes against a genuinely shorter window; raw counts that are the experiment's whatever
the baseline (a property test); bandits without verdicts; each metric's numbers labelled by its aggregator; and the
flag rule behind an experiment id, found or not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client

from opt_mcp.api.client import OptimizelyClient
from opt_mcp.api.errors import OptimizelyError
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.config import Settings
from opt_mcp.sandbox import SEED_PROJECT_ID, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandbox.data import MOBILE_PROJECT_ID
from opt_mcp.sandbox.results import experiment_results
from opt_mcp.server import build_server
from tests.conftest import FAST_RETRY
from tests.helpers import data, make, text

pytestmark = pytest.mark.anyio
PID = SEED_PROJECT_ID


def product_sort(sandbox: Sandbox) -> dict[str, Any]:
    rule: dict[str, Any] = sandbox.store.projects[PID].flags["product_sort"].rulesets["production"].rules["experiment"]
    return rule


# ------------------------------------------------------------------------------------------------------------------
# The client
# ------------------------------------------------------------------------------------------------------------------


async def test_the_report_takes_the_window_and_baseline_the_results_take(
    client: OptimizelyClient, sandbox: Sandbox
) -> None:
    rule = product_sort(sandbox)
    on = str(list(rule["variations"].values())[1]["variation_id"])
    window = {"start_time": "2026-09-01T00:00:00+00:00", "end_time": "2026-10-01T00:02:00+00:00"}
    await client.get_experiment_results(rule["layer_experiment_id"], **window, baseline_variation_id=on)
    report = await client.get_experiment_report(rule["layer_experiment_id"], **window, baseline_variation_id=on)
    (results,), (asked,) = sandbox.requests("GET", "/results$"), sandbox.requests("GET", "/report$")
    assert asked.query == results.query and f"baseline_variation_id={on}" in asked.query
    assert "start_time=" in asked.query and "end_time=" in asked.query
    assert report is not None and report.end_time is not None and report.end_time.minute == 0  # rounded down
    await client.get_experiment_report(rule["layer_experiment_id"])
    assert sandbox.requests("GET", "/report$")[-1].query == ""  # nothing asked, nothing sent


async def test_the_rule_behind_an_experiment_id_is_looked_up_in_the_flags_api(
    client: OptimizelyClient, sandbox: Sandbox
) -> None:
    rule = product_sort(sandbox)
    found = await client.get_experiment_rule(PID, rule["layer_experiment_id"])
    assert (found.flag_key, found.environment_key, found.key, found.type) == (
        "product_sort",
        "production",
        "experiment",
        "a/b",
    )
    assert found.layer_experiment_id == rule["layer_experiment_id"]
    assert found.fetch_results_ui_url == rule["fetch_results_ui_url"]
    with pytest.raises(OptimizelyError) as missing:
        await client.get_experiment_rule(PID, 42)
    assert missing.value.status == 404
    assert [r.path for r in sandbox.requests("GET", "/rules/")] == [
        f"/flags/v1/projects/{PID}/rules/{rule['layer_experiment_id']}",
        f"/flags/v1/projects/{PID}/rules/42",
    ]


# ------------------------------------------------------------------------------------------------------------------
# Through the tool
# ------------------------------------------------------------------------------------------------------------------

MODES = ["auto", "legacy"]  # the 2026-07-28 era and the handshake era
PRODUCTION = {"flag_key": "product_sort", "environment": "production"}
NOW = datetime(2026, 11, 24, 12, 2, 41, tzinfo=UTC)


def fixed(**config: Any) -> Sandbox:
    """A sandbox whose clock stands still, so windows and their rounding are known."""
    return Sandbox(SandboxConfig(rate_limits=SandboxLimits.unlimited(), **config), clock=lambda: NOW)


def variation_ids(rule: dict[str, Any]) -> list[str]:
    return [str(v["variation_id"]) for v in rule["variations"].values()]


@pytest.mark.parametrize("mode", MODES)
async def test_the_report_is_asked_about_the_same_window_and_baseline(mode: str) -> None:
    sandbox = fixed()
    rule = product_sort(sandbox)
    off, on = variation_ids(rule)
    question = {**PRODUCTION, "start_time": "2026-09-01T00:00:00Z", "end_time": "2026-11-01T00:03:00Z"}
    async with Client(make(sandbox), mode=mode) as c:
        default = data(await c.call_tool("get_results", question))
        flipped = data(await c.call_tool("get_results", {**question, "baseline_variation_id": on}))
    results, reports = sandbox.requests("GET", "/results$"), sandbox.requests("GET", "/report$")
    assert [r.query for r in reports] == [r.query for r in results]
    assert "baseline_variation_id" not in results[0].query and f"baseline_variation_id={on}" in results[1].query
    assert all("start_time=" in r.query and "end_time=" in r.query for r in reports)
    # each outcome is Optimizely's reading of its own question: the primary metric against that baseline
    for answer in (default, flipped):
        primary = answer["metrics"][0]
        assert answer["inferred_outcome"] == {"winner": "win", "loser": "loss"}.get(primary["verdict"], "inconclusive")
        assert "inferred_outcome_unavailable" not in answer
    assert [f["id"] for f in flipped["metrics"][0]["variations"] if f["baseline"]] == [on]
    assert off != on


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [503, 404])
async def test_a_failing_report_leaves_the_results_and_says_why(mode: str, status: int) -> None:
    sandbox = fixed()
    sandbox.inject("status", path="/report$", status=status, times=None)
    async with Client(make(sandbox), mode=mode) as c:
        result = await c.call_tool("get_results", PRODUCTION)
    answer = data(result)
    assert answer["status"] == "ready" and answer["metrics"][0]["variations"][0]["samples"] > 0
    assert "inferred_outcome" not in answer
    reason = answer["inferred_outcome_unavailable"]
    assert f"HTTP {status}" in reason and "legacy" in reason
    assert "inferred outcome is unavailable" in answer["note"]
    assert f"inferred outcome: unavailable (its /report request (a legacy endpoint) failed (HTTP {status}" in text(
        result
    )
    tries = FAST_RETRY.attempts if status >= 500 else 1  # a 5xx is retried like any failed read, a 404 is final
    assert len(sandbox.requests("GET", "/report$")) == tries


async def test_a_failing_results_request_still_fails_the_call() -> None:
    sandbox = fixed()
    sandbox.inject("status", path="/results$", status=404, times=None)
    async with Client(make(sandbox)) as c:
        result = await c.call_tool("get_results", PRODUCTION)
    assert result.is_error and "HTTP 404" in text(result)
    assert sandbox.requests("GET", "/report$") == []


async def test_a_failed_report_is_asked_again_but_the_results_are_remembered() -> None:
    sandbox = fixed()
    sandbox.inject("status", path="/report$", status=503, times=None)
    async with Client(make(sandbox)) as c:
        failed = data(await c.call_tool("get_results", PRODUCTION))
        still = data(await c.call_tool("get_results", PRODUCTION))
        sandbox.faults.clear()
        recovered = data(await c.call_tool("get_results", PRODUCTION))
        remembered = data(await c.call_tool("get_results", PRODUCTION))
    assert "inferred_outcome" not in failed and "inferred_outcome" not in still
    assert recovered["inferred_outcome"] in ("win", "loss", "inconclusive") and remembered == recovered
    assert {k: v for k, v in failed.items() if k not in ("inferred_outcome_unavailable", "note")} == {
        k: v for k, v in recovered.items() if k != "inferred_outcome"
    }
    assert len(sandbox.requests("GET", "/results$")) == 1  # the results' 20 a minute are not spent on the report
    assert len(sandbox.requests("GET", "/report$")) == 2 * FAST_RETRY.attempts + 1  # asked again until it answers


# ------------------------------------------------------------------------------------------------------------------
# end_time: rounded down to 5 minutes, or genuinely shorter
# ------------------------------------------------------------------------------------------------------------------


def at(moment: datetime) -> str:
    return moment.isoformat()


@pytest.mark.parametrize("mode", MODES)
async def test_rounding_down_to_five_minutes_is_not_a_shorter_window(mode: str) -> None:
    sandbox = fixed()
    async with Client(make(sandbox), mode=mode) as c:
        latest = datetime.fromisoformat(data(await c.call_tool("get_results", PRODUCTION))["end_time"])
        past = datetime(2026, 11, 1, 10, 5, tzinfo=UTC)
        answers = {
            "up to 4:59 past the last ready end": latest + timedelta(minutes=4, seconds=59),
            "exactly a 5-minute mark": past,
            "past a 5-minute mark": past + timedelta(minutes=2, seconds=33),
            "another time zone": (past + timedelta(minutes=3)).astimezone(timezone(timedelta(hours=5, minutes=45))),
        }
        for why, end in answers.items():
            result = await c.call_tool("get_results", {**PRODUCTION, "end_time": at(end)})
            answer = data(result)
            assert not answer.get("window_shorter_than_asked"), why
            assert "note" not in answer and "earlier than asked" not in text(result), why
    assert datetime.fromisoformat(answer["end_time"]) == past


@pytest.mark.parametrize("mode", MODES)
async def test_a_window_that_ends_before_the_rounded_end_is_shorter(mode: str) -> None:
    sandbox = fixed()
    async with Client(make(sandbox), mode=mode) as c:
        latest = datetime.fromisoformat(data(await c.call_tool("get_results", PRODUCTION))["end_time"])
        for end in (latest + timedelta(minutes=5), datetime(2099, 1, 1, tzinfo=UTC)):
            result = await c.call_tool("get_results", {**PRODUCTION, "end_time": at(end)})
            answer = data(result)
            assert answer["window_shorter_than_asked"] is True and datetime.fromisoformat(answer["end_time"]) == latest
            assert "earlier than asked" in answer["note"] and "earlier than asked" in text(result)


# ------------------------------------------------------------------------------------------------------------------
# Raw counts are the experiment's; lifts and verdicts are relative to the baseline asked
# ------------------------------------------------------------------------------------------------------------------


def raw_counts(answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "visitors": answer["visitors"],
        "metrics": [
            {f["id"]: (f["samples"], f["value"], f["rate"]) for f in m["variations"]} for m in answer["metrics"]
        ],
    }


def largest(effects: list[tuple[float, str]]) -> set[str]:
    """The variations of the largest effect. The view's lifts are rounded and the verdict names the largest
    unrounded one, so two lifts that round alike may be named either."""
    top = max(size for size, _ in effects)
    return {name for size, name in effects if size == top}


def check_verdicts(answer: dict[str, Any], baseline: str) -> None:
    """Every verdict is the one the intervals against ``baseline`` give, in each metric's winning direction."""
    for metric in answer["metrics"]:
        figures = metric["variations"]
        assert [f["id"] for f in figures if f["baseline"]] == [baseline]
        sign = 1 if metric["winning_direction"] == "increasing" else -1
        better, worse = [], []
        for f in figures:
            if f["baseline"] or "interval" not in f:
                continue
            low, high = f["interval"]
            assert f["significant"] == (low > 0 or high < 0)
            if (low > 0 and sign > 0) or (high < 0 and sign < 0):
                better.append((abs(f["lift"]), f["variation"]))
            elif low > 0 or high < 0:
                worse.append((abs(f["lift"]), f["variation"]))
        if not any(f["samples"] for f in figures):
            assert metric["verdict"] == "no_data"
        elif better:
            assert metric["verdict"] == "winner" and metric["verdict_variation"] in largest(better)
        elif worse:
            assert metric["verdict"] == "loser" and metric["verdict_variation"] in largest(worse)
        else:
            assert metric["verdict"] == "inconclusive" and "verdict_variation" not in metric


def reshape(sandbox: Sandbox, arms: int, days: int, traffic: int) -> dict[str, Any]:
    """product_sort's experiment with ``arms`` variations, run for ``days`` on ``traffic`` basis points, and a
    metric of each kind."""
    rule = product_sort(sandbox)
    variations = {}
    for index in range(arms):
        vid = sandbox.store.new_id()
        key = f"arm_{index}"
        variations[key] = {
            "key": key,
            "name": f"Arm {index}",
            "percentage_included": 10000 // arms,
            "variation_id": vid,
        }
    rule.update(variations=variations, days_running=days, percentage_included=traffic)
    rule["metrics"] = [
        *rule["metrics"],
        {"aggregator": "count", "display_title": "page views", "scope": "visitor", "winning_direction": "increasing"},
    ]
    return rule


async def _invariance(seed: int, arms: int, days: int, traffic: int, baselines: list[int], end: str | None) -> None:
    sandbox = fixed(seed=seed)
    rule = reshape(sandbox, arms, days, traffic)
    ids = variation_ids(rule)
    window = {"end_time": end} if end else {}
    async with Client(make(sandbox, results_cache_seconds=0)) as c:
        default = data(await c.call_tool("get_results", {**PRODUCTION, **window}))
        check_verdicts(default, ids[0])  # the default baseline is the first variation (v2 spec)
        for index in baselines:
            baseline = ids[index % arms]
            asked = data(await c.call_tool("get_results", {**PRODUCTION, **window, "baseline_variation_id": baseline}))
            assert raw_counts(asked) == raw_counts(default)
            check_verdicts(asked, baseline)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    arms=st.integers(2, 4),
    days=st.integers(1, 150),
    traffic=st.sampled_from([10000, 5000, 1000, 100]),
    baselines=st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True),
    end=st.none() | st.sampled_from(["2026-11-01T07:03:00Z", "2026-10-15T00:00:00+02:00"]),
)
def test_raw_counts_are_the_same_whatever_the_baseline_and_verdicts_follow_its_intervals(
    seed: int, arms: int, days: int, traffic: int, baselines: list[int], end: str | None
) -> None:
    anyio.run(_invariance, seed, arms, days, traffic, baselines, end)


@pytest.mark.parametrize("mode", MODES)
async def test_asking_against_the_other_arm_flips_lifts_not_counts(mode: str) -> None:
    sandbox = fixed()
    off, on = variation_ids(product_sort(sandbox))
    async with Client(make(sandbox), mode=mode) as c:
        default = data(await c.call_tool("get_results", PRODUCTION))
        flipped = data(await c.call_tool("get_results", {**PRODUCTION, "baseline_variation_id": on}))
    assert raw_counts(default) == raw_counts(flipped)
    check_verdicts(default, off)
    check_verdicts(flipped, on)
    revenue = {m["name"]: m for m in default["metrics"]}["revenue"]
    assert (revenue["verdict"], revenue["verdict_variation"]) == ("winner", "On")  # the seeded effect
    revenue = {m["name"]: m for m in flipped["metrics"]}["revenue"]
    assert (revenue["verdict"], revenue["verdict_variation"]) == ("loser", "Off")  # the same effect, seen from On


# ------------------------------------------------------------------------------------------------------------------
# Multi-armed bandits: no verdicts, whether or not the answer carries lift and significance
# ------------------------------------------------------------------------------------------------------------------

STATISTICS = ("lift", "interval", "significance", "significant", "visitors_remaining")


def without_statistics(body: dict[str, Any]) -> dict[str, Any]:
    """The other reading of a bandit's answer: no lift, no significance, no conclusion (the docs show none)."""
    for metric in body["metrics"]:
        metric.pop("conclusion", None)
        for result in metric["results"].values():
            result.pop("lift", None)
    return body


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reading", ["with statistics", "without statistics"])
async def test_a_bandit_gets_allocation_and_rates_never_a_verdict(mode: str, reading: str) -> None:
    sandbox = fixed()
    rule = product_sort(sandbox)
    rule["type"] = "multi_armed_bandit"
    body = experiment_results(rule, seed=0, now=NOW)
    assert body is not None
    revenue = body["metrics"][1]
    assert revenue["conclusion"] == {"winner": variation_ids(rule)[1]}  # the sandbox's answer names a winner
    assert any(r.get("lift", {}).get("is_significant") for r in revenue["results"].values())
    if reading == "without statistics":
        sandbox.inject("status", path="/results$", status=200, body=json.dumps(without_statistics(body)).encode())
    async with Client(make(sandbox), mode=mode) as c:
        result = await c.call_tool("get_results", PRODUCTION)
    answer = data(result)
    assert answer["rule_type"] == "multi_armed_bandit" and "(multi-armed bandit)" in text(result)
    assert {m["verdict"] for m in answer["metrics"]} == {"not_applicable"}
    assert all("verdict_variation" not in m for m in answer["metrics"])
    for metric in answer["metrics"]:
        for figures in metric["variations"]:
            assert figures["rate"] > 0 and figures["samples"] > 0
            assert not set(STATISTICS) & set(figures)  # nothing relative to a baseline a bandit does not have
    allocation = answer["allocation"]
    assert set(allocation) == set(answer["visitors"]) and sum(allocation.values()) == pytest.approx(1, abs=1e-3)
    assert "do not generate statistical significance" in answer["note"]
    assert "confidence_threshold" not in answer and "significance threshold" not in text(result)
    assert "WINNER" not in text(result) and "LOSER" not in text(result) and "allocation: " in text(result)
    assert "inferred_outcome" not in answer and "not asked" in answer["inferred_outcome_unavailable"]
    assert sandbox.requests("GET", "/report$") == []  # a bandit's outcome is not asked for


@pytest.mark.parametrize("mode", MODES)
async def test_an_ab_rule_with_the_same_figures_gets_verdicts(mode: str) -> None:
    sandbox = fixed()
    async with Client(make(sandbox), mode=mode) as c:
        result = await c.call_tool("get_results", PRODUCTION)
    answer = data(result)
    assert answer["rule_type"] == "a/b" and "allocation" not in answer
    revenue = {m["name"]: m for m in answer["metrics"]}["revenue"]
    assert revenue["verdict"] == "winner" and revenue["variations"][1]["significant"] is True
    assert "WINNER" in text(result) and "significance threshold 0.9" in text(result)
    assert len(sandbox.requests("GET", "/report$")) == 1


async def test_a_bandit_found_by_experiment_id_gets_no_verdict_either() -> None:
    sandbox = fixed()
    rule = product_sort(sandbox)
    rule["type"] = "multi_armed_bandit"
    async with Client(make(sandbox)) as c:
        answer = data(await c.call_tool("get_results", {"experiment_id": rule["layer_experiment_id"]}))
    assert answer["rule_type"] == "multi_armed_bandit"
    assert {m["verdict"] for m in answer["metrics"]} == {"not_applicable"}


# ------------------------------------------------------------------------------------------------------------------
# Each metric's numbers, labelled by its aggregator
# ------------------------------------------------------------------------------------------------------------------

LABELLED = [
    # (metric as the rule holds it, samples_label, value_label, rate_label)
    ({"aggregator": "unique", "display_title": "purchase"}, "visitors", "unique conversions", "conversion rate"),
    (
        {"aggregator": "count", "display_title": "page views"},
        "visitors",
        "total conversions",
        "conversions per visitor",
    ),
    (
        {"aggregator": "sum", "field": "revenue", "display_title": "revenue"},
        "visitors",
        "revenue",
        "revenue per visitor",
    ),
    (
        {"aggregator": "sum", "field": "value", "display_title": "basket"},
        "visitors",
        "sum of value",
        "value per visitor",
    ),
    ({"aggregator": "bounce", "scope": "session", "display_title": "bounce"}, "sessions", "bounces", "bounce rate"),
    ({"aggregator": "exit", "scope": "session", "display_title": "exit"}, "sessions", "exits", "exit rate"),
]


@pytest.mark.parametrize("mode", MODES)
async def test_each_metric_is_labelled_by_its_aggregator(mode: str) -> None:
    sandbox = fixed()
    rule = product_sort(sandbox)
    rule["metrics"] = [{"scope": "visitor", "winning_direction": "increasing", **m} for m, *_ in LABELLED]
    async with Client(make(sandbox), mode=mode) as c:
        result = await c.call_tool("get_results", PRODUCTION)
    answer, said = data(result), text(result)
    for metric, (asked, samples, value, rate) in zip(answer["metrics"], LABELLED, strict=True):
        assert metric["name"] == asked["display_title"] and metric["aggregator"] == asked["aggregator"]
        assert (metric["samples_label"], metric["value_label"], metric["rate_label"]) == (samples, value, rate)
        assert f"metric {json.dumps(metric['name'])} ({rate}, increasing)" in said
        assert f"  variation | {samples} | {value} | {rate} | lift | interval | significance" in said
    revenue = said.split('"revenue"')[1].split("metric")[0]
    assert "conversion" not in revenue  # a revenue metric's numbers are never called conversions


async def test_a_metric_of_an_unknown_aggregator_is_labelled_neutrally() -> None:
    sandbox = fixed()
    rule = product_sort(sandbox)
    rule["metrics"] = [{"aggregator": "percentile", "display_title": "p95 latency", "scope": "event"}]
    async with Client(make(sandbox)) as c:
        answer = data(await c.call_tool("get_results", PRODUCTION))
    (metric,) = answer["metrics"]
    assert (metric["samples_label"], metric["value_label"], metric["rate_label"]) == ("events", "value", "rate")


# ------------------------------------------------------------------------------------------------------------------
# experiment_id alone: the rule behind it, as the flag_key form knows it
# ------------------------------------------------------------------------------------------------------------------

RULE_FACTS = ("flag_key", "environment", "rule_key", "rule_type", "days_running", "results_url")


@pytest.mark.parametrize("mode", MODES)
async def test_an_experiment_id_alone_finds_its_flag_rule(mode: str) -> None:
    sandbox = fixed()
    experiment = product_sort(sandbox)["layer_experiment_id"]
    async with Client(make(sandbox), mode=mode) as c:
        by_flag = data(await c.call_tool("get_results", PRODUCTION))
        by_id = await c.call_tool("get_results", {"experiment_id": experiment})
    answer = data(by_id)
    assert {k: answer.get(k) for k in RULE_FACTS} == {k: by_flag.get(k) for k in RULE_FACTS}
    assert answer["days_running"] == 135 and answer["results_url"].endswith(f"/experiments/{experiment}")
    assert "note" not in answer and "Results of product_sort/production rule experiment" in text(by_id)
    assert [r.path for r in sandbox.requests("GET", "/rules/")] == [f"/flags/v1/projects/{PID}/rules/{experiment}"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [404, 503])
async def test_an_experiment_whose_rule_is_not_found_still_gets_its_results(mode: str, status: int) -> None:
    sandbox = fixed()
    experiment = product_sort(sandbox)["layer_experiment_id"]
    sandbox.inject("status", path="/rules/", status=status, times=None)
    async with Client(make(sandbox), mode=mode) as c:
        result = await c.call_tool("get_results", {"experiment_id": experiment})
    answer = data(result)
    assert answer["status"] == "ready" and answer["metrics"] and answer["inferred_outcome"]
    assert not {k for k in RULE_FACTS if k in answer}
    note = answer["note"]
    assert f"was not found in project {PID} (HTTP {status}" in note and "flag_key, environment, rule_key" in note
    assert "whether it is a multi-armed bandit" in note and note in text(result)


async def test_an_experiment_of_another_project_names_that_project() -> None:
    sandbox = fixed()
    mobile = next(exp for exp, (p, *_) in sandbox.store.experiment_index().items() if p.id == MOBILE_PROJECT_ID)
    async with Client(make(sandbox)) as c:
        here = data(await c.call_tool("get_results", {"experiment_id": mobile}))
        there = data(await c.call_tool("get_results", {"experiment_id": mobile, "project_id": MOBILE_PROJECT_ID}))
    assert "not found in project" in here["note"] and "pass its project_id" in here["note"]
    assert "flag_key" not in here and there["flag_key"] and "note" not in there
    project, flag, env, _ = sandbox.store.experiment_index()[mobile]
    assert (there["flag_key"], there["environment"]) == (flag.key, env) and project.id == MOBILE_PROJECT_ID


async def test_a_rule_found_whose_flag_cannot_be_read_keeps_what_was_found() -> None:
    sandbox = fixed()
    experiment = product_sort(sandbox)["layer_experiment_id"]
    sandbox.inject("status", path="/flags/product_sort$", status=403, times=None)
    async with Client(make(sandbox)) as c:
        answer = data(await c.call_tool("get_results", {"experiment_id": experiment}))
    assert (answer["flag_key"], answer["environment"], answer["rule_key"], answer["rule_type"]) == (
        "product_sort",
        "production",
        "experiment",
        "a/b",
    )
    assert "days_running" not in answer and answer["results_url"]
    assert "days running of rule 'experiment' are unknown" in answer["note"] and "HTTP 403" in answer["note"]


def test_an_experiment_id_without_any_project_is_not_looked_up(served_sandbox: str) -> None:
    """A real token's server has no default project: the lookup needs one, the results do not."""

    async def ask() -> dict[str, Any]:
        server = build_server(
            Settings(token="someone", base_url=served_sandbox), rate_limits=RateLimits.unlimited(), retry=FAST_RETRY
        )
        experiment = product_sort(Sandbox(SandboxConfig()))["layer_experiment_id"]  # the seed's ids never change
        async with Client(server) as c:
            return data(await c.call_tool("get_results", {"experiment_id": experiment}))

    answer = anyio.run(ask)
    assert answer["status"] == "ready" and "flag_key" not in answer
    assert "was not looked up (no project_id)" in answer["note"]


async def test_a_bandits_monitoring_metrics_are_one_line_of_rates() -> None:
    sandbox = fixed()
    rule = product_sort(sandbox)
    rule["type"] = "multi_armed_bandit"
    rule["metrics"] = [dict(rule["metrics"][0], display_title=f"metric {i}") for i in range(9)]
    async with Client(make(sandbox)) as c:
        answer = data(await c.call_tool("get_results", PRODUCTION))
    lines = [m["line"] for m in answer["metrics"] if m["role"] == "monitoring"]
    assert len(lines) == 3
    for line in lines:
        assert line.startswith("not_applicable; Off conversion rate 0.") and ", On conversion rate 0." in line
        assert "%" not in line  # no lift: a bandit has no baseline
