"""get_results: the verdict logic by hand-computed cases, every API state, rule resolution, caching."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client

from opt_mcp import shared
from opt_mcp.api.models import ExperimentMetricResults
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.sandbox import SEED_PROJECT_ID, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandboxed import sandbox_client
from opt_mcp.tools.results import variation_figures
from opt_mcp.verdict import read_metric
from tests.conftest import FAST_RETRY
from tests.helpers import cost, data, make, text

pytestmark = pytest.mark.anyio
PID = SEED_PROJECT_ID
PRODUCTION = {"flag_key": "product_sort", "environment": "production"}


# ------------------------------------------------------------------------------------------------------------------
# The verdict, by hand
# ------------------------------------------------------------------------------------------------------------------


def metric(
    direction: str, *variants: tuple[str, float, list[float] | None, bool], samples: int = 1000
) -> ExperimentMetricResults:
    """A metric with a baseline and variants given as (id, lift, interval, is_significant)."""
    results: dict[str, Any] = {
        "base": {"variation_id": "base", "name": "Off", "is_baseline": True, "samples": samples, "rate": 0.1}
    }
    for vid, lift, interval, significant in variants:
        results[vid] = {
            "variation_id": vid, "name": vid.upper(), "is_baseline": False, "samples": samples,
            "rate": 0.1 * (1 + lift),
            "lift": {"value": lift, "confidence_interval": interval, "is_significant": significant,
                     "lift_status": "better" if lift > 0 else "worse"},
        }  # fmt: skip
    return ExperimentMetricResults.model_validate({"name": "m", "winning_direction": direction, "results": results})


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (metric("increasing", ("on", 0.08, [0.02, 0.14], True)), ("winner", "on")),
        (metric("increasing", ("on", -0.08, [-0.14, -0.02], True)), ("loser", "on")),
        # a positive lift whose interval crosses zero is not a win, whatever lift_status says
        (metric("increasing", ("on", 0.03, [-0.01, 0.07], False)), ("inconclusive", None)),
        # for a metric that should go down, an interval below zero wins
        (metric("decreasing", ("on", -0.10, [-0.15, -0.05], True)), ("winner", "on")),
        (metric("decreasing", ("on", 0.10, [0.05, 0.15], True)), ("loser", "on")),
        # of two significant winners the larger effect is named; a winner outranks a loser
        (metric("increasing", ("a", 0.05, [0.01, 0.09], True), ("b", 0.12, [0.06, 0.18], True)), ("winner", "b")),
        (metric("increasing", ("a", -0.2, [-0.3, -0.1], True), ("b", 0.05, [0.01, 0.09], True)), ("winner", "b")),
        (metric("increasing", ("on", 0.0, None, False), samples=0), ("no_data", None)),
    ],
    ids=["win", "loss", "crosses-zero", "decreasing-win", "decreasing-loss", "largest-win", "win-over-loss", "no-data"],
)
def test_verdicts_follow_the_interval(case: ExperimentMetricResults, expected: tuple[str, str | None]) -> None:
    reading = read_metric(case)
    assert (reading.verdict, reading.variation_id) == expected


bounds = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False).filter(lambda x: x == 0 or abs(x) > 1e-300)


@given(low=bounds, width=st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
def test_rounding_never_moves_an_interval_across_zero(low: float, width: float) -> None:
    high = low + width
    shown = variation_figures(metric("increasing", ("on", (low + high) / 2, [low, high], low > 0 or high < 0)))[1]
    assert shown.interval is not None
    assert (shown.interval[0] > 0, shown.interval[1] < 0) == (low > 0, high < 0)
    assert shown.interval[0] <= shown.interval[1]


# ------------------------------------------------------------------------------------------------------------------
# Through the tool
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_results_primary_first_with_consistent_verdict(sandbox: Sandbox, mode: str) -> None:
    async with Client(make(sandbox), mode=mode) as c:
        result = data(await c.call_tool("get_results", PRODUCTION))
    assert result["status"] == "ready" and result["rule_key"] == "experiment" and result["days_running"] == 135
    roles = [m["role"] for m in result["metrics"]]
    assert roles[0] == "primary" and result["metrics"][0]["name"] == "purchase"
    for m in result["metrics"]:
        baseline = m["variations"][0]
        assert baseline["baseline"] and "lift" not in baseline  # the baseline has no lift
        for v in m["variations"][1:]:
            low, high = v["interval"]
            clears = low > 0 or high < 0
            assert v.get("significant") == clears
            if clears:  # Optimizely's max-int64 "not applicable" sentinel is shown as absent, never as a number
                assert "visitors_remaining" not in v
            else:
                assert 0 < v["visitors_remaining"] < 2**53
            if m["verdict"] in ("winner", "loser"):
                assert clears
    primary = result["metrics"][0]
    expected_outcome = {"winner": "win", "loser": "loss"}.get(primary["verdict"], "inconclusive")
    assert result["inferred_outcome"] == expected_outcome  # agrees with Optimizely's own report
    assert result["results_url"].startswith("https://app.optimizely.com/")


async def test_experiment_id_alone_works(sandbox: Sandbox) -> None:
    async with Client(make(sandbox)) as c:
        flag = data(await c.call_tool("get_flag", {"flag_key": "product_sort", "environment": "production"}))
        experiment = flag["environments"][0]["rules"][0]["experiment_id"]
        result = data(await c.call_tool("get_results", {"experiment_id": int(experiment)}))
    assert result["status"] == "ready" and result["experiment_id"] == experiment


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"flag_key": "product_sort"}, "flag_key and environment are required"),
        ({"flag_key": "product_sort", "environment": "staging"}, "has no environment 'staging'"),
        ({"flag_key": "homepage_hero", "environment": "production"}, "no A/B or multi-armed bandit rule"),
        ({"flag_key": "doc-test-flag", "environment": "development"}, "several experiments, name one"),
        ({"flag_key": "doc-test-flag", "environment": "development", "rule_key": "nope"}, "no rule 'nope'"),
        ({**PRODUCTION, "start_time": "2026-01-01T00:00:00"}, "time zone"),
    ],
)
async def test_rule_resolution_errors_name_the_choices(
    sandbox: Sandbox, arguments: dict[str, Any], message: str
) -> None:
    async with Client(make(sandbox)) as c:
        result = await c.call_tool("get_results", arguments)
    assert result.is_error and message in text(result)
    if "several" in message:
        assert "already-exisiting-a-b-test" in text(result) and "mab_test" in text(result)


async def test_a_delivery_rule_has_no_results(sandbox: Sandbox) -> None:
    async with sandbox_client(sandbox, rate_limits=RateLimits.unlimited()) as api:
        rule = {"key": "everyone", "name": "Everyone", "type": "targeted_delivery", "percentage_included": 10000}
        ops: list[dict[str, Any]] = [
            {"op": "add", "path": "/rules/everyone", "value": rule},
            {"op": "add", "path": "/rule_priorities/0", "value": "everyone"},
        ]
        await api.patch_ruleset(PID, "homepage_hero", "production", ops)
    async with Client(make(sandbox)) as c:
        result = await c.call_tool(
            "get_results", {"flag_key": "homepage_hero", "environment": "production", "rule_key": "everyone"}
        )
    assert result.is_error and "targeted_delivery rule, which has no results" in text(result)


async def test_no_data_for_a_draft_experiment(sandbox: Sandbox) -> None:
    async with Client(make(sandbox)) as c:
        result = data(await c.call_tool("get_results", {"flag_key": "product_sort", "environment": "development"}))
    assert result["status"] == "no_data" and "not started" in result["note"]


async def test_still_computing_is_retried_then_reported(sandbox: Sandbox) -> None:
    once = sandbox.inject("status", path="/results$", status=202, body=b"", times=1)
    async with Client(make(sandbox)) as c:
        ready = data(await c.call_tool("get_results", PRODUCTION))
        sandbox.inject("status", path="/results$", status=202, body=b"", times=None)
        busy = data(
            await c.call_tool(
                "get_results", {**PRODUCTION, "baseline_variation_id": ready["metrics"][0]["variations"][0]["id"]}
            )
        )
    assert once.hits == 1 and ready["status"] == "ready"
    assert busy["status"] == "processing" and "try again" in busy["note"]
    assert len(sandbox.requests("GET", "/results$")) == 2 + FAST_RETRY.attempts


async def test_zero_visitors_stale_and_a_shorter_window(sandbox: Sandbox) -> None:
    rule = sandbox.store.projects[PID].flags["product_sort"].rulesets["production"].rules["experiment"]
    rule["days_running"] = 0
    async with Client(make(sandbox)) as c:
        empty = data(await c.call_tool("get_results", {**PRODUCTION, "end_time": "2099-01-01T00:00:00Z"}))
    assert empty["status"] == "ready" and empty["note"] == "No visitors yet."
    assert all(m["verdict"] == "no_data" for m in empty["metrics"])
    rule["days_running"] = 30
    async with Client(make(sandbox)) as c:
        later = data(await c.call_tool("get_results", {**PRODUCTION, "end_time": "2099-01-01T00:00:00Z"}))
    assert later["window_shorter_than_asked"] is True and "earlier than asked" in later["note"]


async def test_stale_results_are_flagged(sandbox: Sandbox) -> None:
    from datetime import UTC, datetime

    from opt_mcp.sandbox.results import experiment_results

    big = Sandbox(SandboxConfig(flags=200, seed=4, rate_limits=SandboxLimits.unlimited()))
    stale = [
        experiment
        for experiment, (_, _, _, rule) in big.store.experiment_index().items()
        if (body := experiment_results(rule, seed=4, now=datetime.now(UTC))) and body["is_stale"]
    ]
    assert stale  # the sandbox generates some
    async with Client(make(big)) as c:
        result = await c.call_tool("get_results", {"experiment_id": stale[0]})
    assert data(result)["is_stale"] is True and "stale: yes" in text(result)


async def test_asking_twice_uses_the_cache(sandbox: Sandbox) -> None:
    async with Client(make(sandbox)) as c:
        first = data(await c.call_tool("get_results", PRODUCTION))
        second = data(await c.call_tool("get_results", PRODUCTION))
    assert first == second and len(sandbox.requests("GET", "/results$")) == 1
    assert len(sandbox.requests("GET", "/report$")) == 1  # the inferred outcome is remembered with the results
    async with Client(make(sandbox, results_cache_seconds=0)) as c:
        await c.call_tool("get_results", PRODUCTION)
        await c.call_tool("get_results", PRODUCTION)
    assert len(sandbox.requests("GET", "/results$")) == 3


async def test_the_cache_forgets_the_oldest_question(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared, "CACHE_ENTRIES", 8)  # a small cache, to fill it quickly
    async with Client(make(sandbox)) as c:
        await c.call_tool("get_results", PRODUCTION)
        for day in range(1, shared.CACHE_ENTRIES + 1):  # as many other windows as the cache holds
            window = {"end_time": f"2026-11-{day % 23 + 1:02d}T{day // 23:02d}:00:00Z"}
            assert not (await c.call_tool("get_results", {**PRODUCTION, **window})).is_error
        await c.call_tool("get_results", PRODUCTION)
    assert len(sandbox.requests("GET", "/results$")) == shared.CACHE_ENTRIES + 2


def many_metrics(sandbox: Sandbox, count: int) -> None:
    rule = sandbox.store.projects[PID].flags["product_sort"].rulesets["production"].rules["experiment"]
    rule["metrics"] = [dict(rule["metrics"][0], display_title=f"metric {i}") for i in range(count)]


@pytest.mark.parametrize("budget", [1000, 2000, 6000])
async def test_many_metrics_fit_the_budget_and_say_what_was_left_out(sandbox: Sandbox, budget: int) -> None:
    many_metrics(sandbox, 40)
    async with Client(make(sandbox, max_tokens=budget)) as c:
        result = await c.call_tool("get_results", PRODUCTION)
    body = data(result)
    assert cost(result) <= budget
    shown = body["metrics"]
    assert [m["role"] for m in shown] == (["primary"] + ["secondary"] * 5 + ["monitoring"] * 34)[: len(shown)]
    in_full = [m for m in shown if m.get("variations")]
    assert all(m["role"] != "monitoring" for m in in_full) and shown[: len(in_full)] == in_full
    assert all(m.get("line") for m in shown[len(in_full) :])  # the others as one line each
    notes = {n["omitted"]: n for n in body["truncated"]}
    lined = notes["per-variation figures of the metrics shown as one line"]
    assert lined["count"] == len(shown) - len(in_full) and 'metrics=["metric ' in lined["get_it"]
    assert notes.get("metrics", {}).get("count", 0) == 40 - len(shown)
    if budget == 6000:
        assert len(in_full) == 6 and len(shown) == 40  # primary + 5 secondaries in full, monitoring as lines
    if budget == 1000:
        assert len(shown) < 40  # not even one line each fits: the rest are counted, named in get_it
    assert "one line" in text(result)


async def test_metrics_named_are_returned_in_full(sandbox: Sandbox) -> None:
    many_metrics(sandbox, 14)
    async with Client(make(sandbox)) as c:
        body = data(await c.call_tool("get_results", {**PRODUCTION, "metrics": ["Metric 12", "metric 0"]}))
        unknown = await c.call_tool("get_results", {**PRODUCTION, "metrics": ["metric 99"]})
    assert [(m["name"], m["role"]) for m in body["metrics"]] == [("metric 0", "primary"), ("metric 12", "monitoring")]
    assert all(m.get("variations") for m in body["metrics"]) and not body.get("truncated")
    assert (
        unknown.is_error and "metrics: no metric named 'metric 99'" in text(unknown) and "'metric 13'" in text(unknown)
    )


async def test_an_environment_without_experiments_is_named_as_the_argument_to_change(sandbox: Sandbox) -> None:
    async with Client(make(sandbox)) as c:
        result = await c.call_tool("get_results", {"flag_key": "homepage_hero", "environment": "production"})
    assert result.is_error
    assert text(result).split("environment:", 1)[-1].startswith(" homepage_hero/production has no A/B")
