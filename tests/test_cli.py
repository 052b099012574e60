"""The opt-mcp command as a person uses it: call, tools, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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
