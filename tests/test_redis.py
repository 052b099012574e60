"""Replicas that share state through a real Redis server (started here on a loopback port; CI installs Debian's
redis-server): the store's contract, then two `opt-mcp serve` processes sharing one Redis, one secret and one
Optimizely (a served sandbox with Optimizely's rate limits)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from opt_mcp.sandbox import SEED_PROJECT_ID
from opt_mcp.shared import MemoryStore, RedisStore, Store, StoreDown
from tests.conftest import free_port
from tests.helpers import clean_env, connect, data, installed

pytestmark = pytest.mark.anyio
PID = SEED_PROJECT_ID
SECRET = "a-secret-every-replica-shares-0123456789"


class RedisServer:
    """redis-server on a loopback port, without persistence; stop() and start() it to test an outage."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: .ci/run installs it (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, check=False
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------------------------
# The store's contract, in this process and in Redis
# ------------------------------------------------------------------------------------------------------------------


@asynccontextmanager
async def stores(kind: str, redis_server: RedisServer) -> AsyncIterator[tuple[Store, Store]]:
    """Two handles on one shared state, as two replicas hold them."""
    if kind == "memory":
        one = MemoryStore()
        yield one, one
        return
    first, second = RedisStore(redis_server.url), RedisStore(redis_server.url)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_claim_is_won_once_across_replicas(kind: str, redis_server: RedisServer) -> None:
    async with stores(kind, redis_server) as (a, b):
        key = f"claim-{time.time_ns()}"
        won = await asyncio.gather(*[(a if i % 2 else b).claim(key, 5) for i in range(40)])
        assert sorted(won) == [False] * 39 + [True]
        assert await a.claim(key + "-short", 0.2)
        assert not await b.claim(key + "-short", 0.2)
        await asyncio.sleep(0.35)
        assert await b.claim(key + "-short", 0.2)  # expired: free again


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_the_budget_is_one_for_all_replicas(kind: str, redis_server: RedisServer) -> None:
    async with stores(kind, redis_server) as (a, b):
        key, windows = f"budget-{time.time_ns()}", [(2, 1.0), (3, 60.0)]
        assert await a.reserve(key, windows, "r1") == 0
        assert await b.reserve(key, windows, "r2") == 0
        wait = await a.reserve(key, windows, "r3")
        assert 0.5 < wait <= 1.0  # the per-second window is full: about a second
        await asyncio.sleep(wait)
        assert await b.reserve(key, windows, "r3") == 0
        assert await a.reserve(key, windows, "r4") > 50  # the per-minute window (3) is full now
        await b.restamp(key, windows, "r1")  # counted from now: the per-second window waits for it again


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_cached_values_expire_and_audit_entries_append(kind: str, redis_server: RedisServer) -> None:
    async with stores(kind, redis_server) as (a, b):
        key = f"cache-{time.time_ns()}"
        await a.put(key, '{"x": 1}', 0.3)
        assert await b.get(key) == '{"x": 1}'
        await asyncio.sleep(0.45)
        assert await b.get(key) is None
        await a.append("audit-test", {"tool": "patch_flag", "outcome": "written"})


async def test_a_replica_answers_from_its_copy_of_a_cached_value_until_redis_forgets_it(
    redis_server: RedisServer,
) -> None:
    async with stores("redis", redis_server) as (a, b):
        key = f"near-{time.time_ns()}"
        await a.put(key, "answer", 0.6)
        assert await b.get(key) == "answer"  # from Redis: b keeps a copy for as long as Redis keeps the value
        redis_server.stop()
        try:
            assert await a.get(key) == "answer"
            assert await b.get(key) == "answer"  # no round trip: Redis is down
            await asyncio.sleep(0.7)
            for store in (a, b):  # the copies expired with the value: both ask Redis again
                with pytest.raises(StoreDown):
                    await store.get(key)
        finally:
            redis_server.start()
        assert await b.get(key) is None


async def test_an_unreachable_redis_is_store_down_and_the_client_reconnects(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    try:
        assert await store.claim(f"before-{time.time_ns()}", 5)
        redis_server.stop()
        for operation in (store.claim("x", 5), store.get("x"), store.reserve("b", [(1, 1.0)], "m")):
            with pytest.raises(StoreDown, match="unreachable"):
                await operation
        redis_server.start()
        assert await store.claim(f"after-{time.time_ns()}", 5)
    finally:
        await store.aclose()


def test_a_redis_url_is_checked_and_never_shown() -> None:
    from opt_mcp.config import Settings
    from opt_mcp.settings import ConfigError

    settings = Settings.from_env({"OPT_MCP_REDIS_URL": "redis://:hunter2@redis:6379/0"})
    assert (
        settings.redis_url and "hunter2" not in repr(settings) and "hunter2" not in repr(RedisStore(settings.redis_url))
    )
    with pytest.raises(ConfigError, match="OPT_MCP_REDIS_URL must be a redis://"):
        Settings.from_env({"OPT_MCP_REDIS_URL": "http://redis:6379"})


# ------------------------------------------------------------------------------------------------------------------
# Two replicas, one Redis, one secret
# ------------------------------------------------------------------------------------------------------------------


class Replicas:
    def __init__(self, urls: list[str], sandbox: str) -> None:
        self.urls, self.sandbox = urls, sandbox

    async def call(self, replica: int, tool: str, arguments: dict[str, Any]) -> Any:
        async with connect(self.urls[replica], "http") as client:
            return await client.call_tool(tool, arguments)

    def requests(self, method: str, path: str) -> list[dict[str, Any]]:
        records = httpx.get(f"{self.sandbox}/_sandbox/requests").json()
        return [r for r in records if r["method"] == method and path in r["path"]]


@pytest.fixture(scope="module")
def replicas(redis_server: RedisServer, served_sandbox: str) -> Iterator[Replicas]:
    env = clean_env({
        "OPT_MCP_SANDBOX": "false", "OPTIMIZELY_API_TOKEN": "team-shared-token-0123456789",
        "OPTIMIZELY_API_BASE_URL": served_sandbox, "OPTIMIZELY_PROJECT_ID": str(PID),
        "OPT_MCP_REDIS_URL": redis_server.url, "OPT_MCP_SECRET": SECRET, "OPT_MCP_CONFIRM": "token",
    })  # fmt: skip
    ports = [free_port(), free_port()]
    command = [installed("opt-mcp"), "serve", "--transport", "http", "--stateless", "--no-auth"]
    processes = [
        subprocess.Popen([*command, "--port", str(port)], env=env, stderr=subprocess.DEVNULL) for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
        yield Replicas(urls, served_sandbox)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def describe(flag: str, text: str) -> dict[str, Any]:
    return {"flag_key": flag, "operations": [{"op": "replace", "path": "/description", "value": text}]}


async def _into(results: list[Any], index: int, call: Awaitable[Any]) -> None:
    results[index] = await call


def confirmed(arguments: dict[str, Any], preview: dict[str, Any]) -> dict[str, Any]:
    return {**arguments, "confirmation_token": preview["confirmation_token"]}


@pytest.mark.slow
async def test_a_token_used_on_one_replica_is_refused_on_the_other(replicas: Replicas) -> None:
    arguments = describe("product_sort", f"replayed {time.time_ns()}")
    preview = data(await replicas.call(0, "patch_flag", arguments))
    done = data(
        await replicas.call(0, "patch_flag", {**arguments, "confirmation_token": preview["confirmation_token"]})
    )
    replay = await replicas.call(1, "patch_flag", {**arguments, "confirmation_token": preview["confirmation_token"]})
    assert done["status"] == "written"
    assert (replay.is_error and "already used" in replay.content[0].text) or "change nothing" in replay.content[0].text


@pytest.mark.slow
async def test_the_same_token_sent_to_both_at_once_writes_once(replicas: Replicas) -> None:
    for round_ in range(3):
        arguments = describe("homepage_hero", f"raced {round_} {time.time_ns()}")
        preview = data(await replicas.call(round_ % 2, "patch_flag", arguments))
        before = len(replicas.requests("PATCH", f"/projects/{PID}/flags"))
        call = confirmed(arguments, preview)
        results: list[Any] = [None, None]
        async with anyio.create_task_group() as group:
            for replica in (0, 1):
                group.start_soon(_into, results, replica, replicas.call(replica, "patch_flag", call))
        written = [r for r in results if not r.is_error and (r.structured_content or {}).get("status") == "written"]
        assert len(written) == 1, [r.content[0].text for r in results]
        assert len(replicas.requests("PATCH", f"/projects/{PID}/flags")) == before + 1


@pytest.mark.slow
async def test_a_burst_through_both_replicas_stays_within_optimizelys_rate_limit(replicas: Replicas) -> None:
    started = time.time()
    async with anyio.create_task_group() as group:
        for i in range(10):
            group.start_soon(replicas.call, i % 2, "get_flag", {"flag_key": "doc-test-flag"})
    flag_requests = [r for r in replicas.requests("GET", "/flags/v1/") if r["at"] >= started]
    arrivals = sorted(r["at"] for r in flag_requests)
    assert len(arrivals) >= 10
    assert not [r for r in flag_requests if r["status"] == 429]
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= 2  # Flags API: 2 requests a second, for both replicas together (each alone would take 2)
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 2) / 2 - 0.1


@pytest.mark.slow
async def test_without_redis_writes_fail_closed_and_reads_carry_on(
    replicas: Replicas, redis_server: RedisServer
) -> None:
    arguments = describe("doc-test-flag", f"outage {time.time_ns()}")
    preview = data(await replicas.call(0, "patch_flag", arguments))
    before = len(replicas.requests("PATCH", f"/projects/{PID}/flags"))
    redis_server.stop()
    try:
        refused = await replicas.call(
            1, "patch_flag", {**arguments, "confirmation_token": preview["confirmation_token"]}
        )
        read = await replicas.call(0, "get_flag", {"flag_key": "doc-test-flag"})
    finally:
        redis_server.start()
    assert refused.is_error
    assert "cannot be reached" in refused.content[0].text
    assert "nothing" in refused.content[0].text
    assert len(replicas.requests("PATCH", f"/projects/{PID}/flags")) == before  # nothing went out
    assert not read.is_error
    again = data(await replicas.call(1, "patch_flag", arguments))  # Redis is back: the same write goes through
    done = data(await replicas.call(0, "patch_flag", confirmed(arguments, again)))
    assert done["status"] == "written"


@pytest.mark.slow
async def test_results_are_cached_for_both_replicas_and_per_optimizely_token(replicas: Replicas) -> None:
    question = {"flag_key": "product_sort", "environment": "production", "end_time": "2026-11-20T00:00:00Z"}
    before = len(replicas.requests("GET", "/results"))
    first = data(await replicas.call(0, "get_results", question))
    again = data(await replicas.call(1, "get_results", question))  # the other replica: answered from Redis
    assert first == again
    assert len(replicas.requests("GET", "/results")) == before + 1
    async with connect(replicas.urls[1], "http", optimizely="someone-elses-token-0123456789") as client:
        theirs = data(await client.call_tool("get_results", question))
    assert theirs["experiment_id"] == first["experiment_id"]
    assert len(replicas.requests("GET", "/results")) == before + 2  # another token: never the cached answer
