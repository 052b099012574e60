"""get_results' contract with Optimizely's results endpoints, each point pinned from both sides: the client's
requests; /report asked with the window and baseline of /results, and its failure not get_results' failure."""

from __future__ import annotations

from typing import Any

import pytest

from opt_mcp.api.client import OptimizelyClient
from opt_mcp.api.errors import OptimizelyError
from opt_mcp.sandbox import SEED_PROJECT_ID, Sandbox

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
