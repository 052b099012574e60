"""Hosted team mode, served on a loopback port and driven with mcp.Client over Streamable HTTP and SSE."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.auth import AuthConfigError, IntrospectedTokens, StaticTokens, read_name_lines
from opt_mcp.config import Settings
from opt_mcp.hosting import HostedSettings, InFlight, build_app
from opt_mcp.sandbox import SEED_PROJECT_ID, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandbox.data import MOBILE_PROJECT_ID
from opt_mcp.settings import ConfigError
from tests.conftest import FAST_RETRY
from tests.helpers import INSPECTOR, clean_env, connect, data, installed, text

pytestmark = pytest.mark.anyio

ALICE, BOB, CAROL = "alice-" + "a" * 32, "bob-" + "b" * 32, "carol-" + "c" * 32
# Each person's own Optimizely token, and what the sandbox lets it see.
OPT_ALICE, OPT_BOB, OPT_CAROL = "opt-alice-token", "opt-bob-token", "opt-carol-token"
GRANTS = {
    OPT_ALICE: frozenset({SEED_PROJECT_ID}),
    OPT_BOB: frozenset({MOBILE_PROJECT_ID}),
    OPT_CAROL: frozenset({SEED_PROJECT_ID}),
}
SECRET = b"s" * 32


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(SandboxConfig(rate_limits=SandboxLimits.unlimited(), grants=GRANTS))


@pytest.fixture
def tokens_file(tmp_path: Path) -> str:
    path = tmp_path / "tokens"
    path.write_text(f"# the team\nalice:{ALICE}\nbob:{BOB}\n\ncarol:{CAROL}\n")
    return str(path)


@pytest.fixture
def mapping_file(tmp_path: Path) -> str:
    path = tmp_path / "optimizely-tokens"
    path.write_text(f"carol:{OPT_CAROL}\n")
    return str(path)


def app_for(sandbox: Sandbox, hosted: HostedSettings, verifier: Any = None, **settings: Any) -> Starlette:
    return build_app(
        Settings(secret=SECRET, **settings),
        hosted,
        sandbox=sandbox,
        rate_limits=RateLimits.unlimited(),
        retry=FAST_RETRY,
        verifier=verifier,
    )


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """The app on a free loopback port, for as long as the block runs."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def team(sandbox: Sandbox, tokens_file: str, mapping_file: str) -> AsyncIterator[str]:
    hosted = HostedSettings(auth_tokens_file=tokens_file, optimizely_tokens_file=mapping_file)
    async with serving(app_for(sandbox, hosted)) as url:
        yield url


# ----------------------------------------------------------------------------------------------------------------------
# Transports
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "sse"])
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_work_over_both_transports(team: str, transport: str, mode: str) -> None:
    async with connect(team, transport, bearer=ALICE, optimizely=OPT_ALICE, mode=mode) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        flags = data(await c.call_tool("list_flags", {"limit": 2}))
        flag = data(await c.call_tool("get_flag", {"flag_key": "product_sort"}))
    assert {"list_flags", "get_results", "patch_flag"} <= names
    assert flags["returned"] == 2
    assert flag["key"] == "product_sort"


async def test_stateless_replicas_share_confirmation_tokens(sandbox: Sandbox, tokens_file: str) -> None:
    """Behind a load balancer any replica may get the confirming call: a token verifies on any replica that has
    the same secret, and only for the person it was issued to."""
    hosted = HostedSettings(auth_tokens_file=tokens_file, stateless=True)
    async with (
        serving(app_for(sandbox, hosted, confirm="token")) as first,
        serving(app_for(sandbox, hosted, confirm="token")) as second,
    ):
        arguments = {"flag_key": "homepage_hero", "environment": "development", "enabled": True}
        async with connect(first, "http", bearer=ALICE) as c:
            preview = data(await c.call_tool("set_flag_enabled", arguments))
        assert preview["status"] == "preview"
        assert not sandbox.requests("POST")
        async with connect(second, "http", bearer=ALICE) as c:
            done = data(
                await c.call_tool(
                    "set_flag_enabled", {**arguments, "confirmation_token": preview["confirmation_token"]}
                )
            )
    assert done["status"] == "written"
    assert len(sandbox.requests("POST", "/enabled$")) == 1


# ----------------------------------------------------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------------------------------------------------

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def test_unauthenticated_and_wrong_token_get_401_and_nothing_else(team: str) -> None:
    async with httpx.AsyncClient(base_url=team) as http:
        answers = [
            await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS),
            await http.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer " + "x" * 40}),
            await http.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Basic {ALICE}"}),
            await http.get("/sse", headers={"Authorization": "Bearer wrong"}),
            await http.post("/messages/?session_id=" + "0" * 32, json=INITIALIZE, headers=MCP_HEADERS),
        ]
        health = await http.get("/healthz")
    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer ")
        assert answer.json() == {"error": "invalid_token", "error_description": "Authentication required"}
        assert "mcp-session-id" not in answer.headers
    assert health.status_code == 200
    assert health.json()["status"] == "ok"


async def test_wrong_host_and_origin_are_refused_before_anything_else(team: str) -> None:
    good = {**MCP_HEADERS, "Authorization": f"Bearer {ALICE}"}
    async with httpx.AsyncClient(base_url=team) as http:
        host = await http.post("/mcp", json=INITIALIZE, headers={**good, "Host": "evil.example"})
        host_no_auth = await http.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Host": "evil.example"})
        origin = await http.post("/mcp", json=INITIALIZE, headers={**good, "Origin": "https://evil.example"})
        sse_origin = await http.get("/sse", headers={**good, "Origin": "https://evil.example"})
        local_origin = await http.post("/mcp", json=INITIALIZE, headers={**good, "Origin": "http://localhost:3000"})
    assert host.status_code == 421
    assert host_no_auth.status_code == 421
    assert origin.status_code == 403
    assert sse_origin.status_code == 403
    assert local_origin.status_code == 200


async def test_allowed_hosts_and_cors_are_opt_in(sandbox: Sandbox, tokens_file: str) -> None:
    hosted = HostedSettings(
        auth_tokens_file=tokens_file,
        allowed_hosts=("mcp.team.example",),
        allowed_origins=("https://app.team.example",),
        cors_origins=("https://app.team.example",),
    )
    preflight = {"Origin": "https://app.team.example", "Access-Control-Request-Method": "POST"}
    good = {**MCP_HEADERS, "Authorization": f"Bearer {ALICE}"}
    async with serving(app_for(sandbox, hosted)) as url, httpx.AsyncClient(base_url=url) as http:
        named = await http.post("/mcp", json=INITIALIZE, headers={**good, "Host": "mcp.team.example"})
        cors = await http.options("/mcp", headers={**preflight, "Access-Control-Request-Headers": "x-optimizely-token"})
    async with team_without_cors(sandbox, tokens_file) as url, httpx.AsyncClient(base_url=url) as http:
        no_cors = await http.options("/mcp", headers=preflight)
    assert named.status_code == 200
    assert cors.headers["access-control-allow-origin"] == "https://app.team.example"
    assert "access-control-allow-origin" not in no_cors.headers


@asynccontextmanager
async def team_without_cors(sandbox: Sandbox, tokens_file: str) -> AsyncIterator[str]:
    async with serving(app_for(sandbox, HostedSettings(auth_tokens_file=tokens_file))) as url:
        yield url


async def test_oversized_and_slow_bodies_are_refused(sandbox: Sandbox, tokens_file: str) -> None:
    hosted = HostedSettings(auth_tokens_file=tokens_file, max_body_bytes=4096, body_seconds=0.3)
    good = {**MCP_HEADERS, "Authorization": f"Bearer {ALICE}"}

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"jsonrpc": "2.0",'
        await asyncio.sleep(1.0)
        yield b"}"

    async with serving(app_for(sandbox, hosted)) as url, httpx.AsyncClient(base_url=url) as http:
        big = await http.post("/mcp", content=b"[" + b" " * 8000 + b"]", headers=good)
        streamed = await http.post("/mcp", content=_chunks(b" " * 8000), headers=good)
        slow = await http.post("/mcp", content=trickle(), headers=good)
        fine = await http.post("/mcp", json=INITIALIZE, headers=good)
    assert big.status_code == 413
    assert streamed.status_code == 413
    assert slow.status_code == 408
    assert fine.status_code == 200


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(body), 1000):
        yield body[i : i + 1000]


async def test_requests_in_flight_are_bounded_per_person() -> None:
    limit = InFlight(2, wait=0.05)
    assert await limit.enter("alice")
    assert await limit.enter("alice")
    assert not await limit.enter("alice")  # a third waits, then is refused (429)
    assert await limit.enter("bob")  # another person is not held up by alice
    waiting = asyncio.create_task(limit.enter("alice"))
    await limit.leave("alice")
    assert await waiting  # a slot freed within the wait admits the waiting request


# ----------------------------------------------------------------------------------------------------------------------
# People
# ----------------------------------------------------------------------------------------------------------------------


async def test_each_person_sees_their_own_data(team: str, sandbox: Sandbox) -> None:
    async with (
        connect(team, "http", bearer=ALICE, optimizely=OPT_ALICE) as alice,
        connect(team, "sse", bearer=BOB, optimizely=OPT_BOB) as bob,
        connect(team, "http", bearer=CAROL) as carol,
    ):
        seen = {
            name: {p["id"] for p in data(await c.call_tool("list_projects", {}))["projects"]}
            for name, c in (("alice", alice), ("bob", bob), ("carol", carol))
        }
        mobile = {"project_id": str(MOBILE_PROJECT_ID), "limit": 1}
        alice_on_mobile = await alice.call_tool("list_flags", mobile)
        bob_on_mobile = data(await bob.call_tool("list_flags", mobile))
    assert seen == {
        "alice": {str(SEED_PROJECT_ID)},
        "bob": {str(MOBILE_PROJECT_ID)},
        "carol": {str(SEED_PROJECT_ID)},  # the token the operator mapped to carol
    }
    assert alice_on_mobile.is_error
    assert "404" in text(alice_on_mobile)
    assert bob_on_mobile["returned"] == 1


async def test_without_a_token_of_their_own_a_person_uses_the_shared_one(team: str) -> None:
    async with connect(team, "http", bearer=ALICE) as alice:
        projects = data(await alice.call_tool("list_projects", {}))["projects"]
    assert len(projects) == 3  # the sandbox's shared token sees every project
    async with connect(team, "http", bearer=ALICE, optimizely="has spaces in it") as alice:
        malformed = await alice.call_tool("list_projects", {})
    assert malformed.is_error
    assert "X-Optimizely-Token header is not a token" in text(malformed)
    assert "has spaces" not in text(malformed)


async def test_against_optimizely_without_a_shared_token_each_person_brings_one(
    sandbox: Sandbox, tokens_file: str
) -> None:
    """OPT_MCP_SANDBOX=false and no OPTIMIZELY_API_TOKEN: the real API (here the sandbox on a port, reached over
    the network like api.optimizely.com), and only the tokens people send."""
    async with serving(sandbox.app) as api:
        settings = Settings(base_url=api, real_api=True, secret=SECRET)
        assert not settings.uses_sandbox
        app = build_app(settings, HostedSettings(auth_tokens_file=tokens_file), rate_limits=RateLimits.unlimited())
        async with serving(app) as url:
            async with connect(url, "http", bearer=ALICE) as alice:
                missing = await alice.call_tool("list_projects", {})
            async with connect(url, "http", bearer=ALICE, optimizely=OPT_ALICE) as alice:
                projects = data(await alice.call_tool("list_projects", {}))["projects"]
    assert missing.is_error
    assert "No Optimizely token for alice: add the header X-Optimizely-Token" in text(missing)
    assert [p["id"] for p in projects] == [str(SEED_PROJECT_ID)]
    assert all(r.authorized for r in sandbox.requests())


async def test_confirmation_tokens_are_personal(sandbox: Sandbox, tokens_file: str, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    hosted = HostedSettings(auth_tokens_file=tokens_file)
    arguments = {"flag_key": "homepage_hero", "environment": "development", "enabled": True}
    async with (
        serving(app_for(sandbox, hosted, confirm="token", audit_log=str(audit))) as url,
        connect(url, "http", bearer=ALICE, optimizely=OPT_ALICE) as alice,
    ):
        preview = data(await alice.call_tool("set_flag_enabled", arguments))
        token = preview["confirmation_token"]
        async with connect(url, "sse", bearer=CAROL) as carol:  # same Optimizely access, another person
            stolen = await carol.call_tool("set_flag_enabled", {**arguments, "confirmation_token": token})
        assert not sandbox.requests("POST")
        done = data(await alice.call_tool("set_flag_enabled", {**arguments, "confirmation_token": token}))
    assert stolen.is_error
    assert "not one this server issued" in text(stolen)
    assert done["status"] == "written"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["person"], r["outcome"]) for r in records] == [("carol", "refused"), ("alice", "written")]
    assert all(secret not in audit.read_text() for secret in (ALICE, CAROL, OPT_ALICE, OPT_CAROL, token))


# ----------------------------------------------------------------------------------------------------------------------
# OAuth resource-server mode
# ----------------------------------------------------------------------------------------------------------------------

RESOURCE = "https://mcp.team.example"


def introspection(answers: Mapping[str, dict[str, Any]]) -> httpx.MockTransport:
    """A stand-in authorization server's RFC 7662 endpoint."""

    def handle(request: httpx.Request) -> httpx.Response:
        form = dict(x.split("=", 1) for x in request.content.decode().split("&"))
        assert request.headers["authorization"].startswith("Basic ")  # the server authenticates itself
        return httpx.Response(200, json=answers.get(form["token"], {"active": False}))

    return httpx.MockTransport(handle)


async def test_oauth_tokens_are_checked_for_audience_and_scope(sandbox: Sandbox) -> None:
    good = {"active": True, "sub": "dana", "client_id": "claude", "aud": f"{RESOURCE}/mcp", "scope": "mcp opt"}
    answers = {
        "good-token": good,
        "other-audience": {**good, "aud": "https://other.example/mcp"},
        "no-scope": {**good, "scope": "profile"},
        "expired": {**good, "exp": 1000},
    }
    hosted = HostedSettings(
        oauth_issuer="https://login.team.example",
        oauth_introspection_url="https://login.team.example/introspect",
        oauth_client_id="opt-mcp",
        oauth_client_secret="client-secret",
        oauth_scopes=("mcp",),
        public_url=RESOURCE,
    )
    verifier = IntrospectedTokens(
        hosted.oauth_introspection_url or "",
        resource_url=f"{RESOURCE}/mcp",
        client_id="opt-mcp",
        client_secret="client-secret",
        transport=introspection(answers),
    )
    async with serving(app_for(sandbox, hosted, verifier=verifier)) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            metadata = (await http.get("/.well-known/oauth-protected-resource/mcp")).json()
            refused = {
                token: await http.post(
                    "/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"}
                )
                for token in ("other-audience", "no-scope", "expired", "unknown")
            }
        async with connect(url, "http", bearer="good-token") as dana:
            flags = data(await dana.call_tool("list_flags", {"limit": 1}))
    assert metadata["resource"] == f"{RESOURCE}/mcp"
    assert metadata["authorization_servers"] == ["https://login.team.example/"]
    assert {token: r.status_code for token, r in refused.items()} == {
        "other-audience": 401,
        "no-scope": 403,
        "expired": 401,
        "unknown": 401,
    }
    challenge = refused["unknown"].headers["www-authenticate"]
    assert f'resource_metadata="{RESOURCE}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert flags["returned"] == 1


# ----------------------------------------------------------------------------------------------------------------------
# Settings and start-up
# ----------------------------------------------------------------------------------------------------------------------


def test_hosted_mode_requires_authentication() -> None:
    with pytest.raises(ConfigError, match="hosted mode needs authentication"):
        HostedSettings()
    with pytest.raises(ConfigError, match="not both"):
        HostedSettings(auth_tokens_file="x", oauth_issuer="https://a.example")
    with pytest.raises(ConfigError, match="needs OPT_MCP_OAUTH_INTROSPECTION_URL"):
        HostedSettings(oauth_issuer="https://a.example")
    assert HostedSettings(no_auth=True).loopback
    assert "client-secret" not in repr(
        HostedSettings.from_env(
            {
                "OPT_MCP_OAUTH_ISSUER": "https://a.example",
                "OPT_MCP_OAUTH_INTROSPECTION_URL": "https://a.example/i",
                "OPT_MCP_OAUTH_CLIENT_SECRET": "client-secret",
                "OPT_MCP_PUBLIC_URL": "https://mcp.example",
            }
        )
    )


def test_hosted_settings_from_the_environment() -> None:
    hosted = HostedSettings.from_env(
        {
            "OPT_MCP_AUTH_TOKENS_FILE": "/etc/opt-mcp/tokens",
            "OPT_MCP_ALLOWED_HOSTS": "mcp.team.example, mcp.team.example:443",
            "OPT_MCP_MAX_IN_FLIGHT": "4",
            "OPT_MCP_STATELESS": "true",
        },
        port=9000,
    )
    assert hosted.allowed_hosts == ("mcp.team.example", "mcp.team.example:443")
    assert (hosted.max_in_flight, hosted.stateless, hosted.port) == (4, True, 9000)
    with pytest.raises(ConfigError, match="OPT_MCP_MAX_IN_FLIGHT must be a whole number from 1 to 1000, not '0'"):
        HostedSettings.from_env({"OPT_MCP_AUTH_TOKENS_FILE": "x", "OPT_MCP_MAX_IN_FLIGHT": "0"})
    with pytest.raises(ConfigError, match="OPT_MCP_PUBLIC_URL must be an http"):
        HostedSettings.from_env(
            {
                "OPT_MCP_OAUTH_ISSUER": "https://a.example",
                "OPT_MCP_OAUTH_INTROSPECTION_URL": "https://a.example/i",
                "OPT_MCP_PUBLIC_URL": "mcp.example",
            }
        )
    settings = Settings.from_env({"OPT_MCP_SANDBOX": "false", "OPT_MCP_LEDGER_FILE": "/tmp/ledger.sqlite"})
    assert settings.real_api
    assert not settings.uses_sandbox
    assert settings.ledger_file == "/tmp/ledger.sqlite"
    assert Settings.from_env({}).uses_sandbox  # unset is not a refusal


def test_token_files_name_the_line_never_the_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    cases = {
        "alice " + ALICE: "line 1: expected name:token",
        f"alice:{ALICE}\nbob:short-secret": "line 2 (bob): the token must be at least 24 characters",
        f"alice:{ALICE}\nalice:{BOB}": "line 2: alice appears twice",
    }
    for content, message in cases.items():
        path.write_text(content)
        with pytest.raises(AuthConfigError, match=re.escape(message)) as caught:
            read_name_lines(str(path), what="OPT_MCP_AUTH_TOKENS_FILE", min_secret=24)
        assert ALICE not in str(caught.value)
        assert "short-secret" not in str(caught.value)
    path.write_text(f"alice:{ALICE}\nbob:{ALICE}")
    with pytest.raises(AuthConfigError, match="two people share one token"):
        StaticTokens.from_file(str(path))
    with pytest.raises(AuthConfigError, match="cannot be read"):
        StaticTokens.from_file(str(tmp_path / "missing"))


async def test_static_tokens_keep_digests_only(tokens_file: str) -> None:
    verifier = StaticTokens.from_file(tokens_file)
    assert verifier.people == ["alice", "bob", "carol"]
    assert ALICE not in repr(verifier)
    assert ALICE not in repr(vars(verifier))
    found = await verifier.verify_token(BOB)
    assert found is not None
    assert found.subject == "bob"
    assert found.token == ""
    assert await verifier.verify_token(BOB[:-1]) is None


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


@pytest.mark.slow
def test_cli_refuses_hosted_mode_without_auth_and_warns_when_open(tmp_path: Path) -> None:
    env = clean_env()
    refused = subprocess.run(
        [installed("opt-mcp"), "serve", "--transport", "http"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1
    assert "needs authentication" in refused.stderr
    no_token = subprocess.run(
        [installed("opt-mcp"), "serve"], env={**env, "OPT_MCP_SANDBOX": "false"}, capture_output=True, text=True
    )
    assert no_token.returncode == 2
    assert "OPT_MCP_SANDBOX=false needs OPTIMIZELY_API_TOKEN" in no_token.stderr
    with subprocess.Popen(
        [installed("opt-mcp"), "serve", "--transport", "http", "--no-auth", "--host", "0.0.0.0", "--port", free_port()],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(2)]
        process.terminate()
        process.wait(timeout=30)
    assert "without authentication" in lines[1]
    assert "WARNING" in lines[1]


@pytest.mark.slow
async def test_worker_processes_share_the_secret_and_one_sandbox() -> None:
    """`--workers 2`: each call below opens a new connection, so the kernel spreads them over both workers. A token
    issued by either verifies on either (one secret), and every worker sees every write (one shared sandbox)."""
    port = free_port()
    env = {**clean_env(), "OPT_MCP_CONFIRM": "token", "OPT_MCP_SANDBOX_UNLIMITED": "true"}
    command = [installed("opt-mcp"), "serve", "--transport", "http", "--stateless", "--workers", "2", "--no-auth"]
    with subprocess.Popen([*command, "--port", port], env=env, stderr=subprocess.DEVNULL) as process:  # noqa: ASYNC220
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient() as probe:
                for _ in range(300):
                    try:
                        if (await probe.get(f"{url}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)

            async def call(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
                async with connect(url, "http") as c:
                    return data(await c.call_tool(tool, arguments))

            for round_ in range(4):
                arguments = {"flag_key": "homepage_hero", "environment": "development", "enabled": round_ % 2 == 0}
                preview = await call("set_flag_enabled", arguments)
                done = await call(
                    "set_flag_enabled", {**arguments, "confirmation_token": preview["confirmation_token"]}
                )
                assert done["status"] == "written"
                seen = [await call("get_flag", {"flag_key": "homepage_hero"}) for _ in range(4)]
                states = [e["enabled"] for f in seen for e in f["environments"] if e["key"] == "development"]
                assert states == [arguments["enabled"]] * len(seen)
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.network
async def test_the_mcp_inspector_connects_over_http_and_sse_with_a_bearer_token(team: str) -> None:
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("Node's npx is not installed: the MCP Inspector check needs it")
    auth = ["--header", f"Authorization: Bearer {ALICE}"]
    listed = await anyio.run_process(
        [npx, "-y", INSPECTOR, "--cli", f"{team}/sse", "--method", "tools/list", *auth], check=False
    )
    call = ["--method", "tools/call", "--tool-name", "list_flags", "--tool-arg", "limit=2"]
    called = await anyio.run_process([npx, "-y", INSPECTOR, "--cli", f"{team}/mcp", *call, *auth], check=False)
    refused = await anyio.run_process(
        [npx, "-y", INSPECTOR, "--cli", f"{team}/mcp", "--method", "tools/list"], check=False
    )
    assert listed.returncode == 0, listed.stderr.decode()[-2000:]
    assert "list_flags" in {t["name"] for t in json.loads(listed.stdout)["tools"]}
    assert called.returncode == 0, called.stderr.decode()[-2000:]
    assert json.loads(called.stdout)["structuredContent"]["returned"] == 2
    assert refused.returncode != 0  # without the token the Inspector gets a 401
