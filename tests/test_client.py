"""OptimizelyClient against the sandbox: pagination, filters, rate limits, retries, errors, redaction."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opt_mcp.api.client import OptimizelyClient, RetryPolicy
from opt_mcp.api.errors import OptimizelyError
from opt_mcp.api.models import Flag
from opt_mcp.api.query import FlagFilters
from opt_mcp.api.ratelimit import Pacer, RateLimits, Window
from opt_mcp.sandbox import SEED_PROJECT_ID, Limit, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandbox.data import MOBILE_PROJECT_ID
from opt_mcp.sandboxed import pacing_for, sandbox_client
from tests.conftest import FAST_RETRY, SleepRecorder

pytestmark = pytest.mark.anyio
PID = SEED_PROJECT_ID


@pytest.fixture(scope="module")
def big_sandbox() -> Sandbox:
    """5,000 generated flags (plus the 3 seed flags) across 3 environments. Read-only tests share it."""
    return Sandbox(SandboxConfig(flags=5000, environments=3, seed=7, rate_limits=SandboxLimits.unlimited()))


def _unarchived(sandbox: Sandbox) -> set[str]:
    """What a list without ``archived`` returns from the sandbox (its conservative reading: unarchived only)."""
    return {key for key, flag in sandbox.store.projects[PID].flags.items() if not flag.fields.get("archived")}


def _client(sandbox: Sandbox, sleeps: SleepRecorder | None = None) -> OptimizelyClient:
    fake = sleeps or SleepRecorder()
    return sandbox_client(sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY, sleep=fake, clock=fake.clock)


# ------------------------------------------------------------------------------------------------------------------
# Pagination and filters
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_full_pagination_of_5000_flags_visits_each_once(big_sandbox: Sandbox) -> None:
    async with _client(big_sandbox) as client:
        first = await client.list_flags_page(PID, per_page=100)
        keys = [flag.key async for flag in client.iter_flags(PID)]
        archived = [flag.key async for flag in client.iter_flags(PID, FlagFilters(archived=True))]
    live = _unarchived(big_sandbox)
    assert first.total_count == len(live) and first.total_pages == -(-len(live) // 100)
    assert len(keys) == len(set(keys)) == len(live) and set(keys) == live
    assert set(keys) | set(archived) == set(big_sandbox.store.projects[PID].flags) and archived


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    per_page=st.integers(min_value=1, max_value=100),
    archived=st.sampled_from([None, True, False]),
    rule_type=st.sampled_from([(), ("a/b",), ("!targeted_delivery",), ("a/b", "multi_armed_bandit")]),
    sort=st.sampled_from([(), ("key:asc",), ("name:desc",), ("updated_time:desc", "key:asc")]),
)
async def test_pages_partition_the_filtered_flags(
    per_page: int, archived: bool | None, rule_type: tuple[str, ...], sort: tuple[str, ...]
) -> None:
    sandbox = Sandbox(SandboxConfig(flags=250, seed=3, rate_limits=SandboxLimits.unlimited()))
    filters = FlagFilters(archived=archived, rule_type=rule_type, sort=sort)
    async with _client(sandbox) as client:
        first = await client.list_flags_page(PID, filters, per_page=per_page)
        seen = [flag.key async for flag in client.iter_flags(PID, filters, per_page=per_page)]
    assert len(seen) == len(set(seen)) == first.total_count
    assert first.total_pages == max(1, -(-first.total_count // per_page))
    if sort == ("key:asc",):
        assert seen == sorted(seen, key=str.lower)


def _types(flag: Flag, envs: list[str] | None = None) -> set[str]:
    return {r.type for k, e in flag.environments.items() if envs is None or k in envs for r in e.rules_detail}


@pytest.mark.slow
async def test_rule_type_filter_and_its_negation_split_the_project(big_sandbox: Sandbox) -> None:
    async with _client(big_sandbox) as client:
        ab = [f async for f in client.iter_flags(PID, FlagFilters(rule_type=["a/b"]))]
        not_ab = [f async for f in client.iter_flags(PID, FlagFilters(rule_type=["!a/b"]))]
    assert ab and not_ab
    assert all("a/b" in _types(f) for f in ab)
    assert all("a/b" not in _types(f) for f in not_ab)
    assert len(ab) + len(not_ab) == len(_unarchived(big_sandbox))


@pytest.mark.slow
async def test_environment_and_enabled_filters(big_sandbox: Sandbox) -> None:
    async with _client(big_sandbox) as client:
        on = [f async for f in client.iter_flags(PID, FlagFilters(environment=["staging"], enabled=True))]
        off = [f async for f in client.iter_flags(PID, FlagFilters(environment=["staging"], enabled=False))]
    assert on and off and len(on) + len(off) == len(_unarchived(big_sandbox))
    assert all(f.environments["staging"].enabled for f in on)
    assert not any(f.environments["staging"].enabled for f in off)


async def test_archived_query_and_key_list_filters(big_sandbox: Sandbox) -> None:
    async with _client(big_sandbox) as client:
        archived = await client.list_flags_page(PID, FlagFilters(archived=True), per_page=100)
        live = await client.list_flags_page(PID, FlagFilters(archived=False), per_page=1)
        found = await client.list_flags_page(PID, FlagFilters(query="SORT"))
        keyed = await client.list_flags_page(PID, FlagFilters(key_list=["homepage_hero", "doc-test-flag"]))
    assert archived.total_count > 0 and all(f.archived for f in archived.items)
    assert archived.total_count + live.total_count == 5003
    assert "product_sort" in {f.key for f in found.items}
    assert all("sort" in (f.key + f.name + (f.description or "")).lower() for f in found.items)
    assert sorted(f.key for f in keyed.items) == ["doc-test-flag", "homepage_hero"]


async def test_status_filters_and_sort(big_sandbox: Sandbox) -> None:
    async with _client(big_sandbox) as client:
        running = await client.list_flags_page(
            PID, FlagFilters(environment=["production"], environment_status=["running"]), per_page=50
        )
        concluded = await client.list_flags_page(PID, FlagFilters(rule_status=["concluded"]), per_page=50)
        by_name = await client.list_flags_page(PID, FlagFilters(sort=["name:desc"]), per_page=100)
    assert all(f.environments["production"].status == "running" for f in running.items)
    assert all(
        any(r.status == "concluded" for e in f.environments.values() for r in e.rules_detail) for f in concluded.items
    )
    names = [f.name.lower() for f in by_name.items]
    assert names == sorted(names, reverse=True)


async def test_page_number_jumps_and_page_token_is_opaque(big_sandbox: Sandbox) -> None:
    async with _client(big_sandbox) as client:
        third = await client.list_flags_page(PID, per_page=10, page_number=3)
        first = await client.list_flags_page(PID, per_page=10)
        second = await client.follow_flags_link(PID, first.next_link or "")
        with pytest.raises(OptimizelyError) as bad:
            await client.list_flags_page(PID, per_page=10, page_token="forged")
    assert third.page == 3 and second.page == 2
    assert first.next_link and "#2" in first.next_link  # the API's fragment quirk
    assert bad.value.status == 400 and "next_url" in bad.value.message


async def test_last_page_has_no_next_url(client: OptimizelyClient) -> None:
    page = await client.list_flags_page(PID)
    assert page.total_count == 3 and page.next_url is None and page.next_link is None


async def test_links_are_checked_before_they_are_followed(client: OptimizelyClient) -> None:
    for link in ("https://evil.example/projects/1/flags", "/projects/999/flags", f"/projects/{PID}/flags/../../x"):
        with pytest.raises(ValueError, match="Not a link"):
            await client.follow_flags_link(PID, link)


async def test_flag_keys_cannot_reach_other_paths(client: OptimizelyClient, sandbox: Sandbox) -> None:
    with pytest.raises(OptimizelyError) as exc:
        await client.get_flag(PID, "../environments")
    assert exc.value.status == 404
    assert sandbox.requests("GET")[-1].path == f"/flags/v1/projects/{PID}/flags/..%2Fenvironments"


# ------------------------------------------------------------------------------------------------------------------
# Resources
# ------------------------------------------------------------------------------------------------------------------


async def test_environments_projects_and_large_ids(client: OptimizelyClient) -> None:
    envs = await client.list_environments(PID)
    projects = await client.list_projects(per_page=1)  # three pages, by Link header
    mobile = await client.list_flags_page(MOBILE_PROJECT_ID)
    assert [e.key for e in envs] == ["production", "development"]
    assert [p.id for p in projects] == [PID, MOBILE_PROJECT_ID, 20110901]
    assert MOBILE_PROJECT_ID > 2**53 and mobile.items[0].project_id == MOBILE_PROJECT_ID


async def test_patch_applies_bumps_revision_and_ignores_read_only_paths(client: OptimizelyClient) -> None:
    before = await client.get_flag(PID, "doc-test-flag")
    changed = await client.patch_flags(
        PID,
        [
            {"op": "replace", "path": "/doc-test-flag/description", "value": "Flag created with the API."},
            {"op": "replace", "path": "/doc-test-flag/revision", "value": 99},
            {"op": "replace", "path": "/doc-test-flag/no_such_field", "value": 1},
        ],
    )
    after = changed["doc-test-flag"]
    assert after.description == "Flag created with the API."
    assert after.revision == (before.revision or 0) + 1  # the read-only and unknown paths were silently ignored
    assert after.updated_time > before.updated_time


async def test_patch_with_only_ignored_paths_changes_nothing(client: OptimizelyClient) -> None:
    before = await client.get_flag(PID, "homepage_hero")
    changed = await client.patch_flags(PID, [{"op": "replace", "path": "/homepage_hero/key", "value": "renamed"}])
    assert changed["homepage_hero"].revision == before.revision and changed["homepage_hero"].key == "homepage_hero"


async def test_archive_pauses_running_environments_and_unarchive_leaves_them_off(client: OptimizelyClient) -> None:
    archived = (await client.archive_flags(PID, ["product_sort"]))["product_sort"]
    assert archived.archived and archived.revision == 4
    prod = archived.environments["production"]
    assert (prod.enabled, prod.status) == (False, "paused")
    assert archived.update_url is None and archived.unarchive_url
    restored = (await client.unarchive_flags(PID, ["product_sort"]))["product_sort"]
    assert not restored.archived and restored.revision == 5 and not restored.environments["production"].enabled


async def test_archive_with_an_unknown_key_changes_nothing(client: OptimizelyClient) -> None:
    with pytest.raises(OptimizelyError) as exc:
        await client.archive_flags(PID, ["homepage_hero", "no_such_flag"])
    assert exc.value.status == 404 and "no_such_flag" in exc.value.message
    assert not (await client.get_flag(PID, "homepage_hero")).archived


async def test_ruleset_toggle_and_delete(client: OptimizelyClient) -> None:
    ruleset = await client.get_ruleset(PID, "homepage_hero", "development")
    on = await client.enable_ruleset(PID, "homepage_hero", "development")
    off = await client.disable_ruleset(PID, "homepage_hero", "development")
    assert (ruleset.enabled, on.enabled, on.status, off.status) == (False, True, "running", "paused")
    assert off.revision == (ruleset.revision or 0) + 2
    await client.delete_flag(PID, "homepage_hero")
    with pytest.raises(OptimizelyError) as exc:
        await client.get_flag(PID, "homepage_hero")
    assert exc.value.status == 404


async def test_ruleset_patch_adds_a_rule(client: OptimizelyClient) -> None:
    rule = {"key": "paid_users", "name": "Paid users", "type": "targeted_delivery", "percentage_included": 5000}
    patched = await client.patch_ruleset(
        PID,
        "homepage_hero",
        "production",
        [
            {"op": "add", "path": "/rules/paid_users", "value": rule},
            {"op": "add", "path": "/rule_priorities/0", "value": "paid_users"},
        ],
    )
    assert patched.rule_priorities == ["paid_users"] and patched.rules["paid_users"].percentage_included == 5000
    flag = await client.get_flag(PID, "homepage_hero")
    assert flag.environments["production"].rules_summary["targeted_delivery"].keys == ["paid_users"]


async def test_results_states(client: OptimizelyClient, sandbox: Sandbox) -> None:
    flag = await client.get_flag(PID, "product_sort")
    running = flag.environments["production"].rules_detail[0].layer_experiment_id
    draft = flag.environments["development"].rules_detail[0].layer_experiment_id
    assert running and draft
    ready = await client.get_experiment_results(running)
    assert ready.state == "ready" and ready.results and ready.results.experiment_id == running
    assert (await client.get_experiment_results(draft)).state == "no_data"
    sandbox.inject("status", path="/results$", status=202, body=b"", times=1)
    assert (await client.get_experiment_results(running)).state == "ready"  # a 202 is retried within the bound
    sandbox.inject("status", path="/results$", status=202, body=b"", times=None)
    assert (await client.get_experiment_results(running)).state == "processing"
    report = await client.get_experiment_report(running)
    assert report is not None and report.inferred_outcome in ("win", "loss", "inconclusive")


# ------------------------------------------------------------------------------------------------------------------
# Rate limits
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-RATELIMIT-RESET": "3"},  # a number of seconds
        {"X-RATELIMIT-RESET": "epoch+3"},  # a Unix time, computed when the test runs
        {"Retry-After": "3"},
        {},  # no header at all: exponential backoff
    ],
    ids=["reset-seconds", "reset-epoch", "retry-after", "no-headers"],
)
async def test_429_then_success(sandbox: Sandbox, sleeps: SleepRecorder, headers: dict[str, str]) -> None:
    if headers.get("X-RATELIMIT-RESET") == "epoch+3":
        headers = {"X-RATELIMIT-RESET": str(int(time.time()) + 3)}
    fault = sandbox.inject("status", path="/flags/product_sort$", status=429, headers=headers, times=2)
    async with _client(sandbox, sleeps) as client:
        flag = await client.get_flag(PID, "product_sort")
    assert flag.key == "product_sort" and fault.hits == 2
    assert len(sandbox.requests("GET", "/flags/product_sort$")) == 3
    if headers:
        assert 2 * 2 <= sleeps.total <= 2 * 4.5  # waited for the reset each time, within clock rounding
    else:
        assert sleeps.total > 0


async def test_429_with_a_reset_in_the_past_still_ends(sandbox: Sandbox, sleeps: SleepRecorder) -> None:
    sandbox.inject("status", path="/flags$", status=429, headers={"X-RATELIMIT-RESET": "1000"}, times=None)
    async with _client(sandbox, sleeps) as client:
        with pytest.raises(OptimizelyError) as exc:
            await client.list_flags_page(PID)
    assert exc.value.status == 429
    assert sleeps.total <= FAST_RETRY.max_rate_limit_wait and len(sandbox.requests()) < 40


async def test_429_past_the_bound_fails_with_when_to_retry(sandbox: Sandbox, sleeps: SleepRecorder) -> None:
    sandbox.inject("status", path="/flags$", status=429, headers={"X-RATELIMIT-RESET": "120"}, times=None)
    async with _client(sandbox, sleeps) as client:
        with pytest.raises(OptimizelyError) as exc:
            await client.list_flags_page(PID)
    error = exc.value
    assert error.status == 429 and error.retry_after is not None and 119 <= error.retry_after <= 121
    assert "Try again after" in str(error) and sleeps.total == 0
    assert len(sandbox.requests("GET", "/flags$")) == 1


async def test_429s_on_a_write_are_waited_out_and_the_write_happens_once(
    sandbox: Sandbox, sleeps: SleepRecorder
) -> None:
    sandbox.inject("status", path="/flags$", method="PATCH", status=429, headers={"Retry-After": "1"}, times=1)
    async with _client(sandbox, sleeps) as client:
        result = await client.patch_flags(PID, [{"op": "replace", "path": "/homepage_hero/name", "value": "Hero"}])
    assert result["homepage_hero"].revision == 2
    patches = sandbox.requests("PATCH")
    assert [r.status for r in patches] == [429, 200]


async def test_client_pacing_keeps_within_the_sandbox_limit() -> None:
    limits = SandboxLimits(flags=(Limit(4, 0.5),), v2=(), results=())
    sandbox = Sandbox(SandboxConfig(rate_limits=limits))
    async with sandbox_client(sandbox, rate_limits=pacing_for(limits), retry=FAST_RETRY) as client:
        started = time.monotonic()
        for _ in range(10):
            await client.get_flag(PID, "homepage_hero")
        elapsed = time.monotonic() - started
        status = {s.name: s for s in client.rate_status()}
    assert all(r.status == 200 for r in sandbox.requests())  # never a 429
    assert elapsed >= 0.9  # 10 requests at 4 per 0.5 s need at least two full windows
    assert status["flags"].server_limit == 4 and status["flags"].server_remaining is not None


async def test_pacing_counts_a_request_from_its_answer(sleeps: SleepRecorder) -> None:
    """A request is counted from when its answer came (the server saw it no later): a slow first answer pushes the
    window, so a fast second request cannot reach the server inside the first one's window."""
    pacer = Pacer("flags", (Window(1, 1.0),), clock=sleeps.clock, sleep=sleeps)
    stamp = await pacer.acquire()
    sleeps.now += 0.4  # the answer takes 0.4 s
    pacer.settle(stamp)
    await pacer.acquire()
    assert sleeps.calls == [pytest.approx(1.0)]  # 1 s from the answer, not 0.6 s from the send
    pacer.settle(None)  # an unpaced class has nothing to settle
    pacer.settle(-5.0)  # nor does a stamp already out of every window


async def test_an_unreachable_shared_budget_leaves_the_pacing_to_this_process(sleeps: SleepRecorder) -> None:
    """The pacer knows the shared budget only by its protocol: any ConnectionError (the shared store's StoreDown is
    one) means "pace this process alone", for the reservation and for the restamp after the answer."""

    class Unreachable:
        async def reserve(self, key: str, windows: Sequence[tuple[int, float]], member: str) -> float:
            raise ConnectionError("down")

        async def restamp(self, key: str, windows: Sequence[tuple[int, float]], member: str) -> None:
            raise AssertionError("nothing was reserved, so nothing is restamped")

    pacer = Pacer("flags", (Window(1, 1.0),), clock=sleeps.clock, sleep=sleeps, shared=Unreachable())
    first = await pacer.acquire()
    await pacer.settle_shared(first)
    await pacer.acquire()
    assert sleeps.calls == [pytest.approx(1.0)]  # still paced, by this process's own window


async def test_sandbox_limit_without_client_pacing_is_waited_out() -> None:
    sandbox = Sandbox(
        SandboxConfig(rate_limits=SandboxLimits(flags=(Limit(2, 0.4),), v2=(), results=()), reset_style="seconds")
    )
    async with sandbox_client(sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY) as client:
        for _ in range(5):
            await client.get_flag(PID, "homepage_hero")
    statuses = [r.status for r in sandbox.requests()]
    assert statuses.count(200) == 5 and 429 in statuses


# ------------------------------------------------------------------------------------------------------------------
# Retries and faults
# ------------------------------------------------------------------------------------------------------------------


async def test_the_request_hook_hears_each_attempt(sandbox: Sandbox, sleeps: SleepRecorder) -> None:
    heard: list[int] = []
    sandbox.inject("status", path="/flags/doc-test-flag$", status=503, times=1)
    async with sandbox_client(
        sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY, sleep=sleeps, on_request=lambda: heard.append(1)
    ) as client:
        await client.get_flag(PID, "doc-test-flag")
    assert len(heard) == len(sandbox.requests("GET")) == 2  # the 503, then the retry


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_5xx_is_retried_on_get(sandbox: Sandbox, sleeps: SleepRecorder, status: int) -> None:
    sandbox.inject("status", path="/flags/doc-test-flag$", status=status, times=2)
    async with _client(sandbox, sleeps) as client:
        assert (await client.get_flag(PID, "doc-test-flag")).key == "doc-test-flag"
    assert len(sandbox.requests("GET")) == 3 and len(sleeps.calls) == 2


async def test_5xx_on_get_gives_up_after_the_bound(sandbox: Sandbox, sleeps: SleepRecorder) -> None:
    sandbox.inject("status", path="/flags/doc-test-flag$", status=503, times=None)
    async with _client(sandbox, sleeps) as client:
        with pytest.raises(OptimizelyError) as exc:
            await client.get_flag(PID, "doc-test-flag")
    assert exc.value.status == 503 and "try again" in str(exc.value)
    assert len(sandbox.requests("GET")) == FAST_RETRY.attempts


async def test_5xx_is_not_retried_on_patch(sandbox: Sandbox, sleeps: SleepRecorder) -> None:
    sandbox.inject("status", path="/flags$", method="PATCH", status=503, after=True)
    async with _client(sandbox, sleeps) as client:
        with pytest.raises(OptimizelyError) as exc:
            await client.patch_flags(PID, [{"op": "replace", "path": "/homepage_hero/name", "value": "Hero"}])
        current = await client.get_flag(PID, "homepage_hero")
    assert exc.value.status == 503
    assert len(sandbox.requests("PATCH")) == 1  # sent once, never again
    assert current.revision == 2  # the fault hit after the change was made: it was made exactly once


async def test_a_write_that_never_left_is_retried(sandbox: Sandbox, sleeps: SleepRecorder) -> None:
    sandbox.inject("connect", path="/flags/archived$", times=1)
    async with _client(sandbox, sleeps) as client:
        result = await client.archive_flags(PID, ["homepage_hero"])
    assert result["homepage_hero"].archived and result["homepage_hero"].revision == 2
    delivered = [r for r in sandbox.requests("POST") if r.status]
    assert len(delivered) == 1


@pytest.mark.parametrize("kind", ["timeout", "reset"])
async def test_a_write_whose_answer_was_lost_is_reported_not_repeated(
    sandbox: Sandbox, sleeps: SleepRecorder, kind: str
) -> None:
    sandbox.inject(kind, path="/flags$", method="PATCH")  # type: ignore[arg-type]
    async with _client(sandbox, sleeps) as client:
        with pytest.raises(OptimizelyError) as exc:
            await client.patch_flags(PID, [{"op": "replace", "path": "/homepage_hero/name", "value": "Hero"}])
    assert exc.value.status is None and "may or may not have been applied" in str(exc.value)
    assert len(sandbox.requests("PATCH")) == 1


@pytest.mark.parametrize("kind", ["timeout", "reset", "connect"])
async def test_transport_faults_on_get_are_retried(sandbox: Sandbox, sleeps: SleepRecorder, kind: str) -> None:
    sandbox.inject(kind, path="/flags$", times=2)  # type: ignore[arg-type]
    async with _client(sandbox, sleeps) as client:
        assert (await client.list_flags_page(PID)).total_count == 3


@pytest.mark.parametrize("kind", ["malformed", "truncated", "empty"])
async def test_unreadable_answers(sandbox: Sandbox, sleeps: SleepRecorder, kind: str) -> None:
    sandbox.inject(kind, path="/flags/product_sort$", times=1)  # type: ignore[arg-type]
    async with _client(sandbox, sleeps) as client:
        assert (await client.get_flag(PID, "product_sort")).key == "product_sort"  # retried once
        sandbox.inject(kind, path="/flags/product_sort$", times=None)  # type: ignore[arg-type]
        with pytest.raises(OptimizelyError) as exc:
            await client.get_flag(PID, "product_sort")
        assert "could not be read" in exc.value.message
        sandbox.inject(kind, path="/flags/archived$")  # type: ignore[arg-type]
        with pytest.raises(OptimizelyError) as write:
            await client.archive_flags(PID, ["homepage_hero"])
    assert "accepted" in write.value.message and "fetch the resource" in write.value.message
    assert len(sandbox.requests("POST")) == 1


# ------------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------------


async def test_flags_problem_detail_errors_carry_uuid(client: OptimizelyClient) -> None:
    with pytest.raises(OptimizelyError) as exc:
        await client.patch_flags(PID, [{"op": "replace", "path": "/homepage_hero/name", "value": 42}])
    error = exc.value
    assert error.status == 400 and error.uuid and error.title == "Bad Request"
    assert "homepage_hero.name" in error.message and error.uuid in str(error)


async def test_v2_errors_carry_code_and_uuid(client: OptimizelyClient) -> None:
    with pytest.raises(OptimizelyError) as exc:
        await client.get_experiment_results(12345)
    error = exc.value
    assert error.status == 404 and error.code == "not_found" and error.uuid
    assert "list_flags" in str(error)  # the next step names the discovery tools


async def test_404_with_an_empty_body(client: OptimizelyClient) -> None:
    with pytest.raises(OptimizelyError) as exc:
        await client.get_flag(PID, "no_such_flag")
    assert exc.value.status == 404 and "empty body" in exc.value.message and exc.value.uuid is None


async def test_wrong_token_is_401_and_says_what_to_do() -> None:
    sandbox = Sandbox(SandboxConfig(token="the-right-token", rate_limits=SandboxLimits.unlimited()))
    async with sandbox_client(sandbox, "a-wrong-token", rate_limits=RateLimits.unlimited(), retry=FAST_RETRY) as client:
        with pytest.raises(OptimizelyError) as flags_error:
            await client.list_flags_page(PID)
        with pytest.raises(OptimizelyError) as v2_error:
            await client.list_projects()
    assert flags_error.value.status == v2_error.value.status == 401
    assert "OPTIMIZELY_API_TOKEN" in str(flags_error.value)


async def test_missing_token_is_refused_before_any_request() -> None:
    with pytest.raises(ValueError, match="OPTIMIZELY_API_TOKEN"):
        OptimizelyClient("  ")


async def test_bad_ids_and_page_sizes_are_refused_locally(client: OptimizelyClient, sandbox: Sandbox) -> None:
    for call, message in (
        (lambda: client.list_flags_page(0), "positive integer"),
        (lambda: client.list_flags_page(PID, per_page=101), "per_page must be between 1 and 100"),
        (lambda: client.get_flag(PID, ""), "must not be empty"),
    ):
        with pytest.raises(ValueError, match=message):
            await call()
    assert sandbox.requests() == []


# ------------------------------------------------------------------------------------------------------------------
# Token redaction
# ------------------------------------------------------------------------------------------------------------------

SECRET = "2:tok-DistinctiveSecret-9f8e7d6c5b4a39281706"


async def test_token_never_appears_in_repr_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    sandbox = Sandbox(SandboxConfig(rate_limits=SandboxLimits.unlimited()))
    echo = json.dumps({"title": "Bad", "detail": f"token {SECRET} is not allowed", "status": 400}).encode()
    sandbox.inject("status", path="/flags$", status=400, body=echo)
    caplog.set_level(logging.DEBUG)
    retry = RetryPolicy(attempts=2, backoff_base=0.001, backoff_max=0.001)
    async with sandbox_client(sandbox, SECRET, rate_limits=RateLimits.unlimited(), retry=retry) as client:
        texts = [repr(client), repr(client._http.auth)]
        for call in (lambda: client.list_flags_page(PID), lambda: client.get_flag(PID, "nope")):
            with pytest.raises(OptimizelyError) as exc:
                await call()
            texts += [str(exc.value), repr(exc.value), exc.value.message]
        sandbox.inject("timeout", path="/flags$", method="PATCH")
        with pytest.raises(OptimizelyError) as lost:
            await client.patch_flags(PID, [{"op": "replace", "path": "/homepage_hero/name", "value": "x"}])
        texts.append(str(lost.value))
    texts += [record.getMessage() for record in caplog.records]
    assert texts and all(SECRET not in text for text in texts)
    assert "***" in texts[2]  # the echoed token was masked, not dropped silently
    assert sandbox.requests()[0].authorized
