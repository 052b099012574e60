"""The sandbox itself: fidelity to the seed documents, consistent results, determinism, serving on a port."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any

import httpx
import pytest

from opt_mcp.api.models import NOT_AVAILABLE_INT64, ExperimentResults
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.sandbox import SANDBOX_ORIGIN, SEED_PROJECT_ID, Limit, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandboxed import sandbox_client
from tests.conftest import FAST_RETRY, Cli, load

pytestmark = pytest.mark.anyio
PID = SEED_PROJECT_ID
FIXED_NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def test_seed_flags_match_the_documented_responses(sandbox: Sandbox) -> None:
    documented = {flag["key"]: flag for flag in load("seed004/list_flags.json")["items"]}
    async with httpx.AsyncClient(transport=sandbox.transport(), base_url=SANDBOX_ORIGIN) as http:
        response = await http.get(f"/flags/v1/projects/{PID}/flags", headers={"Authorization": "Bearer t"})
    body = response.json()
    assert response.status_code == 200 and "next_url" not in body
    assert (body["count"], body["total_count"], body["total_pages"], body["page"]) == (3, 3, 1, 1)
    assert body["url"] == body["first_url"] == body["last_url"] == f"/projects/{PID}/flags"
    served = {flag["key"]: flag for flag in body["items"]}
    assert set(served) == set(documented)
    for key, doc in documented.items():
        ours = served[key]
        same = ("name", "description", "archived", "outlier_filtering_enabled", "revision", "created_time", "role")
        assert {f: ours[f] for f in same} == {f: doc[f] for f in same}, key
        assert ours["variable_definitions"] == doc["variable_definitions"], key
        assert sorted(ours) == sorted(doc), key  # the same fields, links included
        for env_key, env in doc["environments"].items():
            mine = ours["environments"][env_key]
            for field in ("key", "name", "enabled", "has_restricted_permissions", "priority", "status"):
                assert mine[field] == env[field], (key, env_key, field)
            assert ("enable_url" in mine) == ("enable_url" in env)
            doc_rules = {r["key"]: r for r in env["rules_detail"]}
            for rule_key, rule in doc_rules.items():
                mine_rule = next(r for r in mine["rules_detail"] if r["key"] == rule_key)
                for field in (
                    "type",
                    "status",
                    "days_running",
                    "traffic_allocation",
                    "variation_names",
                    "primary_metric",
                ):
                    assert mine_rule[field] == rule[field], (key, rule_key, field)


async def test_unauthenticated_requests_get_401_in_each_api_style(sandbox: Sandbox) -> None:
    async with httpx.AsyncClient(transport=sandbox.transport(), base_url=SANDBOX_ORIGIN) as http:
        flags = await http.get(f"/flags/v1/projects/{PID}/flags")
        v2 = await http.get("/v2/projects", headers={"Authorization": "Bearer "})
    assert flags.status_code == 401 and flags.headers["content-type"] == "application/problem+json"
    assert set(flags.json()) >= {"title", "status", "detail", "uuid"}
    assert v2.status_code == 401 and set(v2.json()) >= {"code", "message", "uuid"}
    assert [r.authorized for r in sandbox.requests()] == [False, False]


async def test_rate_limit_headers_and_429() -> None:
    sandbox = Sandbox(SandboxConfig(rate_limits=SandboxLimits(flags=(Limit(3, 60),), v2=(), results=())))
    async with httpx.AsyncClient(transport=sandbox.transport(), base_url=SANDBOX_ORIGIN) as http:
        auth = {"Authorization": "Bearer someone"}
        answers = [await http.get(f"/flags/v1/projects/{PID}/flags/homepage_hero", headers=auth) for _ in range(4)]
        other = await http.get(f"/flags/v1/projects/{PID}/flags/homepage_hero", headers={"Authorization": "Bearer b"})
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-RATELIMIT-REMAINING"] for a in answers] == ["2", "1", "0", "0"]
    reset = int(answers[3].headers["X-RATELIMIT-RESET"])
    assert time.time() < reset <= time.time() + 62  # a Unix time, as the v2 conventions say
    assert other.status_code == 200  # budgets are per token


def _experiments(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [entry[3] for entry in sandbox.store.experiment_index().values()]


async def test_results_are_internally_consistent() -> None:
    sandbox = Sandbox(SandboxConfig(flags=300, seed=11, rate_limits=SandboxLimits.unlimited()), clock=lambda: FIXED_NOW)
    verdicts = {"win": 0, "loss": 0, "flat": 0, "no data": 0}
    async with sandbox_client(sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY) as client:
        for rule in _experiments(sandbox):
            answer = await client.get_experiment_results(rule["layer_experiment_id"])
            if answer.results is None:
                assert answer.state == "no_data" and (rule["status"] == "draft" or rule["days_running"] is None)
                verdicts["no data"] += 1
                continue
            outcome = _check_consistency(answer.results)
            verdicts[outcome] += 1
    assert all(count > 0 for count in verdicts.values()), verdicts  # every kind of experiment is represented


def _check_consistency(results: ExperimentResults) -> str:
    threshold = results.confidence_threshold or 0.0
    z = NormalDist().inv_cdf(1 - (1 - threshold) / 2)
    assert results.reach is not None
    outcome = "flat"
    for metric in results.metrics:
        baseline = next(v for v in metric.results.values() if v.is_baseline)
        assert baseline.lift is None
        for variant in metric.results.values():
            samples = variant.samples or 0
            assert results.reach.variations[variant.variation_id or ""].count == samples
            assert variant.rate == pytest.approx((variant.value or 0) / samples if samples else 0.0, abs=1e-6)
            if variant.is_baseline or variant.lift is None:
                continue
            lift = variant.lift
            lo, hi = lift.confidence_interval or [0.0, 0.0]
            assert lo <= (lift.value or 0) <= hi
            assert lift.is_significant == (lo > 0 or hi < 0)
            # significance is 1 - p; significant exactly when it clears the threshold (up to rounding)
            assert (
                (lift.significance or 0) >= threshold - 1e-4
                if lift.is_significant
                else (lift.significance or 0) <= threshold + 1e-4
            )
            half_width = (hi - lo) / 2
            assert half_width > 0 and math.isfinite(half_width / z)
            relative = (variant.rate or 0) / (baseline.rate or 1) - 1
            assert lift.value == pytest.approx(relative, abs=1e-4)
            if lift.is_significant:
                assert lift.visitors_remaining == NOT_AVAILABLE_INT64
        conclusion = metric.conclusion
        if conclusion and conclusion.winner:
            winner = metric.results[conclusion.winner]
            assert winner.lift and winner.lift.is_significant and winner.lift.lift_status == "better"
        if conclusion and conclusion.loser:
            loser = metric.results[conclusion.loser]
            assert loser.lift and loser.lift.is_significant and loser.lift.lift_status == "worse"
        if metric is results.metrics[0] and conclusion:
            outcome = "win" if conclusion.winner else "loss"
    return outcome


async def test_results_are_deterministic_per_seed() -> None:
    def snapshot(seed: int) -> list[Any]:
        sandbox = Sandbox(SandboxConfig(flags=60, seed=seed), clock=lambda: FIXED_NOW)
        from opt_mcp.sandbox.results import experiment_results

        return [experiment_results(rule, seed=seed, now=FIXED_NOW) for rule in _experiments(sandbox)]

    assert snapshot(5) == snapshot(5)
    assert snapshot(5) != snapshot(6)


def test_generated_projects_are_deterministic() -> None:
    def keys(seed: int) -> list[str]:
        return list(Sandbox(SandboxConfig(flags=200, seed=seed)).store.projects[PID].flags)

    assert keys(1) == keys(1) and keys(1) != keys(2) and len(keys(1)) == 203


def test_config_from_environment() -> None:
    config = SandboxConfig.from_env({"OPT_MCP_SANDBOX_FLAGS": "25", "OPT_MCP_SANDBOX_SEED": "4"})
    assert (config.flags, config.seed) == (25, 4)
    assert SandboxConfig.from_env({}, flags=3).flags == 3
    for bad in ({"OPT_MCP_SANDBOX_FLAGS": "many"}, {"OPT_MCP_SANDBOX_SEED": "-1"}):
        with pytest.raises(ValueError, match="OPT_MCP_SANDBOX_"):
            SandboxConfig.from_env(bad)


async def test_latency_fault_delays_the_answer(sandbox: Sandbox) -> None:
    sandbox.inject("latency", path="/flags$", delay=0.2)
    async with sandbox_client(sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY) as client:
        started = time.monotonic()
        await client.list_flags_page(PID)
        assert time.monotonic() - started >= 0.2
    assert sandbox.requests()[0].fault == "latency"


# ------------------------------------------------------------------------------------------------------------------
# On a port, as `opt-mcp sandbox --port N` serves it
# ------------------------------------------------------------------------------------------------------------------


def test_served_sandbox_speaks_the_api(served_sandbox: str) -> None:
    auth = {"Authorization": "Bearer speaker"}
    flags = f"{served_sandbox}/flags/v1/projects/{PID}/flags"
    page = httpx.get(flags, params={"per_page": 100, "archived": "false"}, headers=auth)
    # Served with Optimizely's real limits (2 requests/s per token): the count of archived flags uses another.
    counted = httpx.get(flags, params={"archived": "true"}, headers={"Authorization": "Bearer counter"})
    archived = counted.json()["total_count"]
    assert page.status_code == 200 and page.json()["total_count"] + archived == 153
    second = httpx.get(served_sandbox + "/flags/v1" + page.json()["next_url"][0], headers=auth)
    assert second.json()["page"] == 2 and "next_url" not in second.json()
    assert httpx.get(f"{served_sandbox}/v2/projects").status_code == 401
    projects = httpx.get(f"{served_sandbox}/v2/projects", params={"per_page": 1}, headers=auth)
    assert 'rel="next"' in projects.headers["link"] and projects.headers["link"].startswith(f"<{served_sandbox}/v2/")


def test_served_sandbox_faults_and_log_are_controllable(served_sandbox: str) -> None:
    auth = {"Authorization": "Bearer anything"}
    httpx.delete(served_sandbox + "/_sandbox/requests")
    httpx.post(served_sandbox + "/_sandbox/faults", json={"kind": "status", "path": "homepage_hero$", "status": 503})
    first = httpx.get(f"{served_sandbox}/flags/v1/projects/{PID}/flags/homepage_hero", headers=auth)
    # Served with Optimizely's real limits (2 requests/s per token): a second token has its own budget.
    other = {"Authorization": "Bearer another"}
    second = httpx.get(f"{served_sandbox}/flags/v1/projects/{PID}/flags/homepage_hero", headers=other)
    log = httpx.get(served_sandbox + "/_sandbox/requests").json()
    assert (first.status_code, second.status_code) == (503, 200)
    assert [(r["method"], r["status"], r["fault"]) for r in log] == [("GET", 503, "status"), ("GET", 200, None)]
    assert all("anything" not in str(r) and "another" not in str(r) for r in log)  # tokens are never logged


def test_sandbox_command_rejects_bad_settings(cli: Cli) -> None:
    result = cli("sandbox", "--port", "1", env={"OPT_MCP_SANDBOX_FLAGS": "lots"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "opt-mcp: OPT_MCP_SANDBOX_FLAGS must be a whole number from 0 to 100000, not 'lots'"
    ]


async def test_a_personal_token_sees_only_its_granted_projects() -> None:
    from opt_mcp.sandbox.data import MOBILE_PROJECT_ID

    sandbox = Sandbox(
        SandboxConfig(rate_limits=SandboxLimits.unlimited(), grants={"mine": frozenset({MOBILE_PROJECT_ID})})
    )
    experiment = next(iter(sandbox.store.experiment_index()))  # an experiment of the seed project
    async with httpx.AsyncClient(transport=sandbox.transport(), base_url=SANDBOX_ORIGIN) as http:
        mine = {"Authorization": "Bearer mine"}
        everyone = {"Authorization": "Bearer anything-else"}
        projects = (await http.get("/v2/projects", headers=mine)).json()
        all_projects = (await http.get("/v2/projects", headers=everyone)).json()
        seed_flags = await http.get(f"/flags/v1/projects/{PID}/flags", headers=mine)
        results = await http.get(f"/v2/experiments/{experiment}/results", headers=mine)
        mobile_flags = await http.get(f"/flags/v1/projects/{MOBILE_PROJECT_ID}/flags", headers=mine)
    assert [p["id"] for p in projects] == [MOBILE_PROJECT_ID] and len(all_projects) == 3
    assert seed_flags.status_code == 404 and "do not have access" in seed_flags.text
    assert results.status_code == 404
    assert mobile_flags.status_code == 200


def test_the_request_log_keeps_the_most_recent_only() -> None:
    from opt_mcp.sandbox.faults import RequestLog, RequestRecord

    log = RequestLog(keep=3)
    for i in range(5):
        log.add(RequestRecord(method="GET", path=f"/{i}", query="", body=b"", status=200, authorized=True, at=0.0))
    assert [r.path for r in log.records()] == ["/2", "/3", "/4"]


async def test_array_parameters_read_comma_joined_and_repeated_alike(sandbox: Sandbox) -> None:
    """The descriptions and public clients join arrays with commas; the spec gives no style, so OpenAPI's default
    (the parameter repeated) is read too, and both mixed."""
    url = f"/flags/v1/projects/{PID}/flags"
    auth = {"Authorization": "Bearer t"}
    asked = ["homepage_hero", "product_sort", "doc-test-flag"]
    async with httpx.AsyncClient(transport=sandbox.transport(), base_url=SANDBOX_ORIGIN, headers=auth) as http:
        joined = await http.get(url, params={"key_list": ",".join(asked[:2])})
        repeated = await http.get(url, params=[("key_list", asked[0]), ("key_list", asked[1])])
        mixed = await http.get(url, params=[("key_list", ",".join(asked[:2])), ("key_list", asked[2])])
    assert sorted(f["key"] for f in joined.json()["items"]) == sorted(asked[:2])
    assert sorted(f["key"] for f in repeated.json()["items"]) == sorted(asked[:2])
    assert sorted(f["key"] for f in mixed.json()["items"]) == sorted(asked)
