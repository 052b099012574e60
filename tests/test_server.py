"""The MCP server driven through mcp.Client: in memory in both protocol eras, and over stdio as clients launch it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from opt_mcp import server as served
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.config import Settings
from opt_mcp.sandbox import SEED_PROJECT_ID, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandbox.data import MOBILE_PROJECT_ID
from opt_mcp.server import OUTPUT_SCHEMAS, build_server, output_schemas
from opt_mcp.settings import ConfigError
from opt_mcp.views import inlined
from tests.conftest import FAST_RETRY
from tests.helpers import INSPECTOR, clean_env, data, installed, make_server, rpc_call, serve_stdio, text

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent
SNAPSHOT = Path(__file__).parent / "snapshots" / "tools.json"
MODES = ["auto", "legacy"]
READ_TOOLS = {"list_projects", "list_environments", "list_flags", "get_flag", "get_results"}
ALL_TOOLS = READ_TOOLS | {"patch_flag", "archive_flags", "unarchive_flags", "set_flag_enabled"}


@pytest.fixture(params=MODES)
async def client(request: pytest.FixtureRequest, sandbox: Sandbox) -> AsyncIterator[Client]:
    async with Client(make_server(sandbox), mode=request.param) as c:
        yield c


# ------------------------------------------------------------------------------------------------------------------
# Tool definitions
# ------------------------------------------------------------------------------------------------------------------


async def test_every_tool_is_fully_described(client: Client) -> None:
    tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == ALL_TOOLS
    for tool in tools:
        assert tool.title, tool.name
        assert tool.description, tool.name
        assert len(tool.description) > 60, tool.name
        assert tool.output_schema, tool.name
        assert tool.output_schema.get("type") == "object", tool.name
        hints = tool.annotations
        assert hints is not None, tool.name
        for hint in ("read_only_hint", "destructive_hint", "idempotent_hint", "open_world_hint"):
            assert getattr(hints, hint) is not None, f"{tool.name} leaves {hint} to the unsafe default"
        if tool.name in READ_TOOLS:
            assert hints.read_only_hint, tool.name
            assert not hints.destructive_hint, tool.name
        assert len(json.dumps(tool.input_schema)) < 4000, f"{tool.name}: input schema too large"


async def test_tool_definitions_a_model_reads_stay_under_8_kb(client: Client) -> None:
    """Claude's clients put each tool's name, description and input schema in the model's context."""
    tools = (await client.list_tools()).tools
    facing = [json.dumps({"name": t.name, "description": t.description, "input_schema": t.input_schema}) for t in tools]
    assert sum(len(text.encode()) for text in facing) < 8 * 1024


async def test_tool_schemas_match_the_snapshot(client: Client) -> None:
    """A change to any tool's schema, description or annotations shows up here, in review."""
    tools = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in (await client.list_tools()).tools]
    current = json.dumps(tools, indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.read_text() == current, "tool definitions changed: rerun with UPDATE_SNAPSHOTS=1 and review"


def test_shipped_output_schemas_are_the_views_schemas() -> None:
    """The package ships its output schemas (generating them costs every launch); they must be the views'."""
    current = json.dumps(output_schemas(), indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        OUTPUT_SCHEMAS.write_text(current)
    assert OUTPUT_SCHEMAS.read_text() == current, "views changed: rerun with UPDATE_SNAPSHOTS=1 and review"


def test_each_tool_declares_the_view_its_return_annotation_names() -> None:
    for spec in served.READ_TOOLS + served.WRITE_TOOLS:
        returned = typing.get_type_hints(spec.fn, include_extras=True)["return"]
        assert returned.__metadata__ == (spec.output,), spec.fn.__name__


async def test_instructions_explain_the_tools_and_the_sandbox(client: Client) -> None:
    instructions = client.instructions or ""
    for word in ("list_flags", "get_flag", "next_cursor", "sandbox", str(SEED_PROJECT_ID)):
        assert word in instructions


# ------------------------------------------------------------------------------------------------------------------
# list_flags
# ------------------------------------------------------------------------------------------------------------------


async def test_list_flags_summarises_each_flag(client: Client) -> None:
    result = data(await client.call_tool("list_flags", {}))
    assert (result["total_count"], result["returned"], result["next_cursor"]) == (3, 3, None)
    product_sort = next(f for f in result["flags"] if f["key"] == "product_sort")
    assert product_sort["environments"]["production"] == {"on": True, "status": "running", "rules": {"a/b": 1}}
    assert result["project_id"] == str(SEED_PROJECT_ID)


@pytest.mark.slow
async def test_cursor_walks_5000_flags_exactly_once() -> None:
    sandbox = Sandbox(SandboxConfig(flags=5000, environments=3, rate_limits=SandboxLimits.unlimited()))
    seen: list[str] = []
    async with Client(make_server(sandbox)) as c:
        cursor: str | None = None
        calls = 0
        while True:
            args: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            result = data(await c.call_tool("list_flags", args))
            seen += [flag["key"] for flag in result["flags"]]
            calls += 1
            cursor = result["next_cursor"]
            if cursor is None:
                break
    expected = [k for k, f in sandbox.store.projects[SEED_PROJECT_ID].flags.items() if not f.fields["archived"]]
    assert len(seen) == len(set(seen)) == result["total_count"] == len(expected)
    # The context budget may return fewer than `limit` flags a call; it never loses or repeats one.
    assert set(seen) == set(expected)
    assert calls >= -(-len(expected) // 100)


@pytest.mark.parametrize("limit", [1, 2, 7])
async def test_cursor_pages_with_small_limits(sandbox: Sandbox, limit: int) -> None:
    async with Client(make_server(sandbox)) as c:
        keys: list[str] = []
        cursor = None
        while True:
            result = data(await c.call_tool("list_flags", {"limit": limit, **({"cursor": cursor} if cursor else {})}))
            assert result["returned"] <= limit
            keys += [f["key"] for f in result["flags"]]
            if not (cursor := result["next_cursor"]):
                break
    assert sorted(keys) == ["doc-test-flag", "homepage_hero", "product_sort"]


async def test_list_flags_filters(client: Client) -> None:
    on_in_prod = data(await client.call_tool("list_flags", {"environment": "production", "enabled": True}))
    experiments = data(await client.call_tool("list_flags", {"rule_type": "multi_armed_bandit"}))
    found = data(await client.call_tool("list_flags", {"query": "hero", "sort": "key:asc"}))
    archived = data(await client.call_tool("list_flags", {"archived": True}))
    assert [f["key"] for f in on_in_prod["flags"]] == ["product_sort"]
    assert [f["key"] for f in experiments["flags"]] == ["doc-test-flag"]
    assert [f["key"] for f in found["flags"]] == ["homepage_hero"]
    assert archived["total_count"] == 0


async def test_cursor_misuse_is_a_clear_error(client: Client) -> None:
    first = data(await client.call_tool("list_flags", {"limit": 1}))
    other_filters = await client.call_tool("list_flags", {"limit": 1, "query": "x", "cursor": first["next_cursor"]})
    garbage = await client.call_tool("list_flags", {"cursor": "not-a-cursor"})
    assert (
        other_filters.is_error
        and "cursor" in text(other_filters)
        and "same project_id and filters" in text(other_filters)
    )
    assert garbage.is_error
    assert "without cursor" in text(garbage)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 500}, "limit"),
        ({"rule_type": "ab"}, "rule_type"),
        ({"sort": "random"}, "sort"),
        ({"environment": "prod/../x"}, "environment"),
        ({"project_id": "abc"}, "project_id"),
    ],
)
async def test_bad_arguments_name_the_field(client: Client, arguments: dict[str, Any], field: str) -> None:
    result = await client.call_tool("list_flags", arguments)
    assert result.is_error
    assert field in text(result)
    assert "Traceback" not in text(result)


# ------------------------------------------------------------------------------------------------------------------
# get_flag, discovery, errors
# ------------------------------------------------------------------------------------------------------------------


async def test_get_flag_shows_rules_variables_and_permissions(client: Client) -> None:
    flag = data(await client.call_tool("get_flag", {"flag_key": "product_sort"}))
    assert flag["revision"] == 3 and flag["permissions"] == {
        "update": True,
        "archive": True,
        "unarchive": False,
        "delete": True,
    }
    assert {v["key"]: v["default"] for v in flag["variables"]}["sort_algorithm"] == "our popular first"
    production = flag["environments"][0]
    assert (production["key"], production["production"], production["enabled"]) == ("production", True, True)
    rule = production["rules"][0]
    assert (rule["key"], rule["type"], rule["traffic_percent"], rule["days_running"]) == (
        "experiment",
        "a/b",
        100.0,
        135,
    )
    assert rule["variations"] == ["Off", "On"]
    assert rule["primary_metric"] == "purchase"
    assert isinstance(rule["experiment_id"], str)
    assert rule["experiment_id"].isdigit()


async def test_get_flag_one_environment(client: Client) -> None:
    flag = data(await client.call_tool("get_flag", {"flag_key": "doc-test-flag", "environment": "development"}))
    assert [e["key"] for e in flag["environments"]] == ["development"]
    assert flag["hidden_environments"] == ["production"]
    assert flag["environments"][0]["rules"][0]["audiences"] == ["5340810295"]
    missing = await client.call_tool("get_flag", {"flag_key": "doc-test-flag", "environment": "staging"})
    assert missing.is_error
    assert "production" in text(missing)
    assert "development" in text(missing)


async def test_unknown_flag_suggests_the_closest_keys(client: Client) -> None:
    result = await client.call_tool("get_flag", {"flag_key": "product_srot"})
    assert result.is_error
    assert "Did you mean: product_sort" in text(result)
    assert "flag_key" in text(result)


@pytest.mark.parametrize("key", ["../environments", "a b", "x" * 65, ""])
async def test_invalid_flag_keys_never_reach_the_api(sandbox: Sandbox, key: str) -> None:
    async with Client(make_server(sandbox)) as c:
        result = await c.call_tool("get_flag", {"flag_key": key})
    assert result.is_error
    assert "flag_key" in text(result)
    assert sandbox.requests() == []


async def test_discovery_tools(client: Client) -> None:
    projects = data(await client.call_tool("list_projects", {}))
    envs = data(await client.call_tool("list_environments", {}))
    mobile = data(await client.call_tool("list_flags", {"project_id": str(MOBILE_PROJECT_ID), "limit": 1}))
    assert projects["default_project_id"] == str(SEED_PROJECT_ID)
    assert str(MOBILE_PROJECT_ID) in {p["id"] for p in projects["projects"]}  # above 2**53, exact
    assert [(e["key"], e["priority"]) for e in envs["environments"]] == [("production", 1), ("development", 2)]
    assert mobile["project_id"] == str(MOBILE_PROJECT_ID)
    assert mobile["total_count"] > 0


async def test_api_errors_are_tool_errors_with_status_uuid_and_next_step(sandbox: Sandbox) -> None:
    sandbox.inject("status", path="/flags/product_sort$", status=403, times=None)
    async with Client(make_server(sandbox)) as c:
        result = await c.call_tool("get_flag", {"flag_key": "product_sort"})
        unknown_project = await c.call_tool("list_flags", {"project_id": 123})
    message = text(result)
    assert result.is_error
    assert "HTTP 403" in message
    assert re.search(r"uuid [0-9a-f-]{36}", message)
    assert "permission" in message
    assert unknown_project.is_error
    assert "HTTP 404" in text(unknown_project)
    assert "list_projects" in text(unknown_project)


async def test_without_a_default_project_the_tool_asks_for_one() -> None:
    server = build_server(Settings(token="real-looking-token"), rate_limits=RateLimits.unlimited(), retry=FAST_RETRY)
    async with Client(server) as c:
        result = await c.call_tool("list_flags", {})
        assert not (c.instructions or "").count("sandbox")
    assert result.is_error
    assert "project_id is required" in text(result)
    assert "list_projects" in text(result)


# ------------------------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------------------------


def test_settings_from_environment() -> None:
    settings = Settings.from_env(
        {"OPTIMIZELY_API_TOKEN": "abc", "OPTIMIZELY_PROJECT_ID": "42", "OPT_MCP_READ_ONLY": "yes"}
    )
    assert (settings.token, settings.project_id, settings.read_only, settings.uses_sandbox) == ("abc", 42, True, False)
    assert "abc" not in repr(settings)
    assert Settings.from_env({"OPTIMIZELY_API_TOKEN": ""}).uses_sandbox
    assert Settings.from_env({"OPTIMIZELY_API_TOKEN": "abc"}, sandbox=True).uses_sandbox


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OPTIMIZELY_PROJECT_ID": "my-project"}, "OPTIMIZELY_PROJECT_ID"),
        ({"OPTIMIZELY_API_BASE_URL": "ftp://x"}, "OPTIMIZELY_API_BASE_URL"),
        ({"OPT_MCP_READ_ONLY": "maybe"}, "OPT_MCP_READ_ONLY"),
        ({"OPTIMIZELY_API_TOKEN": "Bearer abc"}, "OPTIMIZELY_API_TOKEN"),
        ({"OPT_MCP_SANDBOX_FLAGS": "-3"}, "OPT_MCP_SANDBOX_FLAGS"),
    ],
)
def test_bad_settings_name_the_setting(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(environ)


# ------------------------------------------------------------------------------------------------------------------
# stdio, as desktop clients launch it
# ------------------------------------------------------------------------------------------------------------------


async def test_stdio_server_lists_and_calls_tools() -> None:
    params = StdioServerParameters(command=installed("opt-mcp"), args=["serve"], env=clean_env())
    for mode in MODES:
        async with Client(params, mode=mode) as c:
            tools = (await c.list_tools()).tools
            result = data(await c.call_tool("list_flags", {"limit": 2}))
        assert {t.name for t in tools} == ALL_TOOLS
        assert result["returned"] == 2
        assert result["next_cursor"]


@pytest.mark.slow
def test_stdio_stdout_carries_nothing_but_json_rpc() -> None:
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        rpc_call(3, "get_flag", {"flag_key": "product_sort"}),
        rpc_call(4, "get_flag", {"flag_key": "nope"}),
    ]  # fmt: skip
    process = serve_stdio()
    assert process.stdin
    assert process.stdout
    assert process.stderr
    process.stdin.write("".join(json.dumps(r) + "\n" for r in requests))
    process.stdin.flush()
    messages: list[dict[str, Any]] = []
    try:
        # Read until every request has its answer; every line must be a JSON-RPC message.
        while {m.get("id") for m in messages} < {1, 2, 3, 4}:
            line = process.stdout.readline()
            assert line, "the server closed stdout early"
            messages.append(json.loads(line))
    finally:
        process.stdin.close()
        process.wait(timeout=30)
    rest = process.stdout.read()
    assert not rest.strip(), f"stdout carried more than protocol: {rest[:200]!r}"
    assert all(m.get("jsonrpc") == "2.0" for m in messages)
    answered = {m["id"]: m for m in messages if "id" in m}
    assert answered[3]["result"]["structuredContent"]["key"] == "product_sort"
    assert answered[4]["result"]["isError"] is True
    assert "embedded sandbox" in process.stderr.read()


def test_stdio_bad_setting_is_one_line_on_stderr() -> None:
    process = subprocess.run(
        [installed("opt-mcp"), "serve"],
        input="",
        capture_output=True,
        text=True,
        env=clean_env({"OPTIMIZELY_PROJECT_ID": "nope"}),
        timeout=60,
    )
    assert process.returncode == 2
    assert process.stdout == ""
    assert process.stderr.strip().splitlines() == [
        "opt-mcp: OPTIMIZELY_PROJECT_ID must be a project's numeric id, not 'nope'"
    ]


# ------------------------------------------------------------------------------------------------------------------
# README client configurations, started exactly as written
# ------------------------------------------------------------------------------------------------------------------


def _snippets() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text()
    return dict(re.findall(r"<!-- snippet: ([\w-]+) -->\n```\w+\n(.*?)```", readme, flags=re.S))


def _launch(name: str, snippet: str) -> tuple[str, list[str], dict[str, str]]:
    if name == "claude-code":
        words = shlex.split(snippet)
        assert words[:3] == ["claude", "mcp", "add"]
        assert "--" in words
        options, command = words[: words.index("--")], words[words.index("--") + 1 :]
        env = dict(options[i + 1].split("=", 1) for i, w in enumerate(options) if w == "--env")
        return command[0], command[1:], env
    config = json.loads(snippet)
    (entry,) = (config.get("mcpServers") or config["servers"]).values()
    assert entry.get("type", "stdio") == "stdio"
    return entry["command"], entry.get("args", []), entry.get("env", {})


def test_readme_has_every_client_snippet() -> None:
    assert set(_snippets()) == {"claude-desktop", "claude-code", "cursor", "vscode"}


@pytest.mark.parametrize("name", ["claude-desktop", "claude-code", "cursor", "vscode"])
async def test_readme_snippet_starts_a_working_server(name: str) -> None:
    command, args, env = _launch(name, _snippets()[name])
    params = StdioServerParameters(command=installed(command), args=args, env=clean_env(env))
    async with Client(params) as c:
        tools = {t.name for t in (await c.list_tools()).tools}
        result = data(await c.call_tool("list_flags", {}))
    assert tools >= READ_TOOLS
    assert result["total_count"] == 3


# ------------------------------------------------------------------------------------------------------------------
# The official MCP Inspector, from the npm registry
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.network
def test_mcp_inspector_lists_and_calls_without_warnings() -> None:
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("Node's npx is not installed: the MCP Inspector check needs it")
    base = [npx, "-y", INSPECTOR, "--cli", installed("opt-mcp"), "serve"]
    listed = subprocess.run(
        [*base, "--method", "tools/list"], capture_output=True, text=True, env=clean_env(), timeout=300
    )
    called = subprocess.run(
        [*base, "--method", "tools/call", "--tool-name", "list_flags", "--tool-arg", "limit=2"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert {t["name"] for t in json.loads(listed.stdout)["tools"]} == ALL_TOOLS
    assert called.returncode == 0, called.stderr[-2000:]
    assert json.loads(called.stdout)["structuredContent"]["returned"] == 2
    for output in (listed, called):
        # The Inspector reports schema problems on stderr ("Schema portability: N errors, M warnings …").
        diagnostics = [line for line in output.stderr.splitlines() if not line.lower().startswith("npm warn")]
        assert not [
            line for line in diagnostics if "portability" in line.lower() or line.startswith(("Warning", "Error"))
        ]


def test_tools_list_loads_neither_http_nor_the_sandbox() -> None:
    """Start-up answers tools/list without importing the HTTP stack, the API client or the sandbox: they load on
    the first call (bench/run.py measures what this saves; this only keeps it from coming back)."""
    script = """
import sys, anyio
from mcp import Client
from opt_mcp.config import Settings
from opt_mcp.server import build_server
heavy = ("httpx", "opt_mcp.api.client", "opt_mcp.sandbox.app", "opt_mcp.sandbox.gateway")
async def main():
    async with Client(build_server(Settings())) as client:
        await client.list_tools()
        print(sorted(m for m in heavy if m in sys.modules))
        assert not (await client.call_tool("get_flag", {"flag_key": "product_sort"})).is_error
        print(sorted(m for m in heavy if m in sys.modules))
anyio.run(main)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    listed, called = done.stdout.strip().splitlines()
    assert listed == "[]"
    assert called == str(sorted(["httpx", "opt_mcp.api.client", "opt_mcp.sandbox.app", "opt_mcp.sandbox.gateway"]))


def test_output_schemas_are_self_contained_and_recursion_would_be_caught() -> None:
    shipped = json.loads(OUTPUT_SCHEMAS.read_text())
    assert all("$ref" not in json.dumps(schema) and "$defs" not in schema for schema in shipped.values())
    looped = {
        "$ref": "#/$defs/Node",
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
    }
    with pytest.raises(ValueError, match="refers to itself"):
        inlined(looped)
    described = {
        "$defs": {"A": {"type": "string", "description": "a"}},
        "properties": {"x": {"$ref": "#/$defs/A", "description": "x"}},
    }
    assert inlined(described) == {"properties": {"x": {"type": "string", "description": "x"}}}
