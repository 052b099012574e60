"""The sandbox's results model and its rule lookup: what is simulated is a property of the experiment (never of the
baseline asked), each aggregator is simulated as what it counts, bandits favour their better arms, and the Flags
API's ``GET /projects/{project_id}/rules/{experiment_id}`` answers as the spec describes."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opt_mcp.sandbox import SANDBOX_ORIGIN, SEED_PROJECT_ID, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandbox.data import CLASSIC_PROJECT_ID, MOBILE_PROJECT_ID
from opt_mcp.sandbox.results import experiment_results, floor_5min

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 11, 24, 12, 2, 41, tzinfo=UTC)
AUTH = {"Authorization": "Bearer someone"}


def product_sort(sandbox: Sandbox) -> dict[str, Any]:
    rule: dict[str, Any] = (
        sandbox.store.projects[SEED_PROJECT_ID].flags["product_sort"].rulesets["production"].rules["experiment"]
    )
    return rule


def with_arms(sandbox: Sandbox, rule: dict[str, Any], arms: int) -> dict[str, Any]:
    """The rule with ``arms`` variations (fresh ids, an even split)."""
    variations = {}
    for index in range(arms):
        vid = sandbox.store.new_id()
        name = "Control" if index == 0 else f"Arm {index}"
        variations[f"arm_{index}"] = {
            "key": f"arm_{index}",
            "name": name,
            "percentage_included": 10000 // arms,
            "variation_id": vid,
            "id": vid,
        }
    return {**rule, "variations": variations}


def raw(body: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the baseline: per metric and variation, the samples and the value; and the reach."""
    return {
        "reach": {vid: v["count"] for vid, v in body["reach"]["variations"].items()},
        "metrics": [
            {vid: (r["samples"], r["value"], r["rate"], r["variance"]) for vid, r in m["results"].items()}
            for m in body["metrics"]
        ],
        "window": (body["start_time"], body["end_time"]),
    }


_GENERATED = Sandbox(SandboxConfig(flags=80, seed=9))
_RUNNING = [
    rule
    for _, _, _, rule in _GENERATED.store.experiment_index().values()
    if rule["status"] != "draft" and rule.get("days_running")
]


@settings(max_examples=60, deadline=None)
@given(
    index=st.integers(0, len(_RUNNING) - 1),
    arms=st.integers(2, 4),
    bandit=st.booleans(),
    seed=st.integers(0, 2**32),
    end_days_ago=st.none() | st.integers(0, 40),
    data=st.data(),
)
def test_nothing_simulated_depends_on_the_baseline(
    index: int, arms: int, bandit: bool, seed: int, end_days_ago: int | None, data: st.DataObject
) -> None:
    rule = with_arms(_GENERATED, copy.deepcopy(_RUNNING[index]), arms)
    rule["type"] = "multi_armed_bandit" if bandit else "a/b"
    end = None if end_days_ago is None else NOW - timedelta(days=end_days_ago, minutes=7)
    ids = [str(v["variation_id"]) for v in rule["variations"].values()]
    default = experiment_results(rule, seed=seed, now=NOW, end_time=end)
    assert default is not None
    for baseline in data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=3, unique=True)):
        asked = experiment_results(rule, seed=seed, now=NOW, end_time=end, baseline_variation_id=baseline)
        assert asked is not None and raw(asked) == raw(default)
        for metric in asked["metrics"]:
            assert [vid for vid, r in metric["results"].items() if r["is_baseline"]] == [baseline]
            assert "lift" not in metric["results"][baseline]


def test_a_lift_is_relative_to_the_baseline_asked() -> None:
    sandbox = Sandbox(SandboxConfig())
    rule = product_sort(sandbox)
    off, on = (str(v["variation_id"]) for v in rule["variations"].values())
    default = experiment_results(rule, seed=0, now=NOW)
    flipped = experiment_results(rule, seed=0, now=NOW, baseline_variation_id=on)
    assert default is not None and flipped is not None
    for before, after in zip(default["metrics"], flipped["metrics"], strict=True):
        rate_off, rate_on = before["results"][off]["rate"], before["results"][on]["rate"]
        assert before["results"][on]["lift"]["value"] == pytest.approx(rate_on / rate_off - 1, abs=1e-5)
        assert after["results"][off]["lift"]["value"] == pytest.approx(rate_off / rate_on - 1, abs=1e-5)
        # a winner against Off is a loser's baseline against On: the conclusion names the other side
        if before.get("conclusion", {}).get("winner") == on:
            assert after["conclusion"] == {"loser": off}


def test_each_aggregator_is_simulated_as_what_it_counts() -> None:
    sandbox = Sandbox(SandboxConfig())
    rule = product_sort(sandbox)
    rule["metrics"] = [
        {"aggregator": "unique", "display_title": "purchase", "scope": "visitor", "winning_direction": "increasing"},
        {"aggregator": "count", "display_title": "page views", "scope": "visitor", "winning_direction": "increasing"},
        {"aggregator": "sum", "field": "revenue", "display_title": "revenue", "scope": "visitor"},
    ]
    body = experiment_results(rule, seed=0, now=NOW)
    assert body is not None
    unique, count, revenue = body["metrics"]
    for r in unique["results"].values():  # unique conversions: whole visitors, at most all of them
        assert r["value"] == int(r["value"]) and 0 <= r["value"] <= r["samples"]
    assert any(r["value"] > r["samples"] for r in count["results"].values())  # total conversions: several each
    assert all(r["value"] == int(r["value"]) for r in count["results"].values())
    assert revenue["field"] == "revenue" and revenue["aggregator"] == "sum"
    assert any(r["value"] != int(r["value"]) for r in revenue["results"].values())  # an amount, not a count
    for metric in body["metrics"]:
        for r in metric["results"].values():
            assert r["rate"] == pytest.approx(r["value"] / r["samples"], abs=1e-6) and r["variance"] > 0


def test_a_bandit_sends_more_traffic_to_its_better_arms() -> None:
    clear = 0
    for rule in _RUNNING:
        ab = experiment_results({**rule, "type": "a/b"}, seed=9, now=NOW)
        bandit = experiment_results({**rule, "type": "multi_armed_bandit"}, seed=9, now=NOW)
        assert ab is not None and bandit is not None
        if not bandit["reach"]["total_count"]:
            continue
        primary = bandit["metrics"][0]
        sign = 1 if primary["winning_direction"] == "increasing" else -1
        rates = {vid: r["rate"] for vid, r in primary["results"].items()}
        reach = {vid: v["count"] for vid, v in bandit["reach"]["variations"].items()}
        best = max(rates, key=lambda vid: sign * rates[vid])
        worst = min(rates, key=lambda vid: sign * rates[vid])
        # arms clearly apart, on enough visitors for the observed rates to show the true ones
        if bandit["reach"]["total_count"] > 20_000 and rates[worst] and abs(rates[best] / rates[worst] - 1) > 0.1:
            clear += 1
            assert reach[best] > reach[worst]
            assert reach[best] > ab["reach"]["variations"][best]["count"]  # more than its even share
        # the same traffic, split differently
        assert sum(reach.values()) == pytest.approx(ab["reach"]["total_count"], abs=len(reach))
    assert clear >= 3


@pytest.mark.parametrize(
    ("asked", "answered"),
    [
        ("2026-11-20T10:07:33+00:00", "2026-11-20T10:05:00+00:00"),
        ("2026-11-20T10:05:00+00:00", "2026-11-20T10:05:00+00:00"),
        ("2026-11-20T10:04:59.999+00:00", "2026-11-20T10:00:00+00:00"),
        ("2026-11-20T15:52:33+05:45", "2026-11-20T10:05:00+00:00"),  # Nepal's offset: still 5-minute steps in UTC
    ],
)
def test_end_times_round_down_to_five_minutes(asked: str, answered: str) -> None:
    assert floor_5min(datetime.fromisoformat(asked)) == datetime.fromisoformat(answered)


def test_start_times_round_up_to_five_minutes() -> None:
    rule = product_sort(Sandbox(SandboxConfig()))
    body = experiment_results(rule, seed=0, now=NOW, start_time=datetime(2026, 11, 1, 8, 1, 2, tzinfo=UTC))
    assert body is not None and body["start_time"] == "2026-11-01T08:05:00.000000Z"


# ------------------------------------------------------------------------------------------------------------------
# GET /flags/v1/projects/{project_id}/rules/{experiment_id}
# ------------------------------------------------------------------------------------------------------------------


async def test_the_rule_behind_an_experiment_id() -> None:
    sandbox = Sandbox(SandboxConfig(rate_limits=SandboxLimits.unlimited()))
    rule = product_sort(sandbox)
    mobile = next(
        exp for exp, (project, *_) in sandbox.store.experiment_index().items() if project.id == MOBILE_PROJECT_ID
    )
    base = f"/flags/v1/projects/{SEED_PROJECT_ID}/rules"
    async with httpx.AsyncClient(transport=sandbox.transport(), base_url=SANDBOX_ORIGIN, headers=AUTH) as http:
        found = await http.get(f"{base}/{rule['layer_experiment_id']}")
        unknown = await http.get(f"{base}/123")
        elsewhere = await http.get(f"{base}/{mobile}")
        there = await http.get(f"/flags/v1/projects/{MOBILE_PROJECT_ID}/rules/{mobile}")
        malformed = await http.get(f"{base}/abc")
        classic = await http.get(f"/flags/v1/projects/{CLASSIC_PROJECT_ID}/rules/{rule['layer_experiment_id']}")
    assert found.status_code == 200
    body = found.json()
    assert (body["flag_key"], body["flag_name"], body["environment_key"], body["environment_name"]) == (
        "product_sort",
        "Product sort",
        "production",
        "Production",
    )
    assert (body["key"], body["type"], body["layer_experiment_id"]) == (
        "experiment",
        "a/b",
        rule["layer_experiment_id"],
    )
    assert body["fetch_results_ui_url"] == rule["fetch_results_ui_url"]
    assert "days_running" not in body  # not a property of the spec's Rule
    assert unknown.status_code == elsewhere.status_code == 404 and unknown.content == b""  # "Not found. No content"
    assert there.status_code == 200 and there.json()["layer_experiment_id"] == mobile
    assert malformed.status_code == 400 and classic.status_code == 400
