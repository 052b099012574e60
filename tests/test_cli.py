"""The opt-mcp command as a person uses it: call, tools, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from opt_mcp.config import Settings
from opt_mcp.doctor import diagnose
from opt_mcp.sandbox import SANDBOX_ORIGIN, SEED_PROJECT_ID, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandboxed import sandbox_client
from tests.conftest import FAST_RETRY

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIMIZELY_", "OPT_MCP_"))}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opt_mcp", *args], capture_output=True, text=True, env=ENV, timeout=120
    )


def test_call_prints_the_structured_result() -> None:
    result = run("call", "list_flags", '{"limit": 1}')
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["returned"] == 1 and body["total_count"] == 3 and body["next_cursor"]


def test_call_reports_a_tool_error_with_exit_code_1() -> None:
    result = run("call", "get_flag", '{"flag_key": "product_srot"}')
    assert result.returncode == 1 and "Did you mean: product_sort" in result.stdout


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_call_with_bad_json_is_one_line(arguments: str) -> None:
    result = run("call", "list_flags", arguments)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "JSON object" in result.stderr


def test_unknown_tool_is_reported() -> None:
    result = run("call", "drop_database", "{}")
    assert result.returncode == 1 and "drop_database" in result.stdout


def test_tools_lists_each_tool_with_its_size() -> None:
    result = run("tools")
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and len(lines) == 10 and lines[-1].startswith("total")
    names = [line.split()[0] for line in lines[:-1]]
    assert names[:5] == ["list_projects", "list_environments", "list_flags", "get_flag", "get_results"]
    assert set(names[5:]) == {"patch_flag", "archive_flags", "unarchive_flags", "set_flag_enabled"}
    sizes = [int(line.split()[1]) for line in lines]
    assert all(size > 0 for size in sizes) and sizes[-1] == sum(sizes[:-1])


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("opt-mcp ")


def test_tools_in_read_only_mode_lists_no_writes() -> None:
    result = run("tools", "--read-only")
    names = [line.split()[0] for line in result.stdout.strip().splitlines()[:-1]]
    assert result.returncode == 0 and names == [
        "list_projects",
        "list_environments",
        "list_flags",
        "get_flag",
        "get_results",
    ]


# ------------------------------------------------------------------------------------------------------------------
# opt-mcp doctor
# ------------------------------------------------------------------------------------------------------------------


def test_doctor_on_the_sandbox_passes_and_prints_a_configuration_that_starts() -> None:
    result = run("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[1].split()[0] for line in checks] == ["token", "api", "project", "permissions", "rate"]
    assert all(line.startswith("[  ok]") for line in checks)
    entry = json.loads(result.stdout[result.stdout.index("{") :])["mcpServers"]["optimizely"]
    started = subprocess.run(
        [entry["command"], *entry["args"][:-1], "call", "list_projects"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert started.returncode == 0 and "5629661695180800" in started.stdout  # the printed command is this install


def test_doctor_with_a_token_checks_the_api_and_never_prints_the_token(served_sandbox: str) -> None:
    token = "doctor-secret-7Qx2"
    env = {**ENV, "OPTIMIZELY_API_TOKEN": token, "OPTIMIZELY_API_BASE_URL": served_sandbox}
    result = subprocess.run(
        [sys.executable, "-m", "opt_mcp", "doctor"], capture_output=True, text=True, env=env, timeout=120
    )
    assert token not in result.stdout + result.stderr
    assert "(18 characters, not shown)" in result.stdout and "<your Optimizely token>" in result.stdout
    assert "[warn] project" in result.stdout and "OPTIMIZELY_PROJECT_ID is not set" in result.stdout
    assert "[  ok] permissions" in result.stdout and "flags 1" in result.stdout  # Optimizely's own count
    assert result.returncode == 0  # a warning is not a failure


@pytest.mark.anyio
async def test_doctor_fails_clearly_on_a_refused_token_and_an_unreachable_api() -> None:
    settings = Settings(token="wrong-token-3Zp", base_url=SANDBOX_ORIGIN, project_id=SEED_PROJECT_ID)
    refusing = Sandbox(SandboxConfig(token="right-token", rate_limits=SandboxLimits.unlimited()))
    async with sandbox_client(refusing, "wrong-token-3Zp", retry=FAST_RETRY) as client:
        refused = await diagnose(settings, client)
    unreachable = Sandbox(SandboxConfig(rate_limits=SandboxLimits.unlimited()))
    unreachable.inject("connect", times=None)
    async with sandbox_client(unreachable, "any", retry=FAST_RETRY) as client:
        down = await diagnose(settings, client)
    for report, says in ((refused, "The token was refused"), (down, "Could not connect")):
        assert not report.healthy and [c.name for c in report.checks] == ["token", "api"]
        assert report.checks[-1].status == "fail" and says in report.checks[-1].detail
        assert "wrong-token-3Zp" not in "\n".join(report.lines())
