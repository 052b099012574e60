"""The opt-mcp command as a person uses it: call, tools, doctor, bad input. Run in this process (the ``cli`` fixture:
``main`` with its arguments, stdout and stderr captured) unless the test is about the process itself."""

from __future__ import annotations

import json
import subprocess

import pytest

from opt_mcp.config import Settings
from opt_mcp.doctor import diagnose
from opt_mcp.sandbox import SANDBOX_ORIGIN, SEED_PROJECT_ID, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandboxed import sandbox_client
from tests.conftest import FAST_RETRY, Cli
from tests.helpers import clean_env


def test_call_prints_the_structured_result(cli: Cli) -> None:
    result = cli("call", "list_flags", '{"limit": 1}')
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["returned"] == 1
    assert body["total_count"] == 3
    assert body["next_cursor"]


def test_call_reports_a_tool_error_with_exit_code_1(cli: Cli) -> None:
    result = cli("call", "get_flag", '{"flag_key": "product_srot"}')
    assert result.returncode == 1
    assert "Did you mean: product_sort" in result.stdout


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_call_with_bad_json_is_one_line(cli: Cli, arguments: str) -> None:
    result = cli("call", "list_flags", arguments)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "JSON object" in result.stderr


def test_unknown_tool_is_reported(cli: Cli) -> None:
    result = cli("call", "drop_database", "{}")
    assert result.returncode == 1
    assert "drop_database" in result.stdout


def test_tools_lists_each_tool_with_its_size(cli: Cli) -> None:
    result = cli("tools")
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0
    assert len(lines) == 10
    assert lines[-1].startswith("total")
    names = [line.split()[0] for line in lines[:-1]]
    assert names[:5] == ["list_projects", "list_environments", "list_flags", "get_flag", "get_results"]
    assert set(names[5:]) == {"patch_flag", "archive_flags", "unarchive_flags", "set_flag_enabled"}
    sizes = [int(line.split()[1]) for line in lines]
    assert all(size > 0 for size in sizes)
    assert sizes[-1] == sum(sizes[:-1])


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("opt-mcp ")


def test_tools_in_read_only_mode_lists_no_writes(cli: Cli) -> None:
    result = cli("tools", "--read-only")
    names = [line.split()[0] for line in result.stdout.strip().splitlines()[:-1]]
    assert result.returncode == 0
    assert names == ["list_projects", "list_environments", "list_flags", "get_flag", "get_results"]


# ------------------------------------------------------------------------------------------------------------------
# opt-mcp doctor
# ------------------------------------------------------------------------------------------------------------------


def test_doctor_on_the_sandbox_passes_and_prints_a_configuration_that_starts(cli: Cli) -> None:
    result = cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[1].split()[0] for line in checks] == ["token", "api", "project", "permissions", "rate"]
    assert all(line.startswith("[  ok]") for line in checks)
    entry = json.loads(result.stdout[result.stdout.index("{") :])["mcpServers"]["optimizely"]
    # The printed command is this installation: started as a client would start it, in a process of its own.
    started = subprocess.run(
        [entry["command"], *entry["args"][:-1], "call", "list_projects"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    assert "5629661695180800" in started.stdout


def test_doctor_with_a_token_checks_the_api_and_never_prints_the_token(cli: Cli, served_sandbox: str) -> None:
    token = "doctor-secret-7Qx2"
    result = cli("doctor", env={"OPTIMIZELY_API_TOKEN": token, "OPTIMIZELY_API_BASE_URL": served_sandbox})
    assert token not in result.stdout + result.stderr
    assert "(18 characters, not shown)" in result.stdout
    assert "<your Optimizely token>" in result.stdout
    assert "[warn] project" in result.stdout
    assert "OPTIMIZELY_PROJECT_ID is not set" in result.stdout
    assert "[  ok] permissions" in result.stdout
    assert "flags 1" in result.stdout  # Optimizely's own count
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
