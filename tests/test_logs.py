"""Logging: stderr only, text or JSON lines, one line per tool call with what it cost, never an argument's value."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from mcp import Client

from opt_mcp.logs import JsonLines
from opt_mcp.sandbox import Sandbox
from opt_mcp.settings import LOG_FORMAT
from tests.helpers import make_server, stdio_exchange

pytestmark = pytest.mark.anyio


@pytest.mark.slow
def test_json_lines_on_stderr_one_per_tool_call_and_no_argument_values() -> None:
    toggle = {"flag_key": "product_sort", "environment": "development", "enabled": True}

    def confirmed(answers: list[dict[str, Any]]) -> dict[str, Any]:
        return {**toggle, "confirmation_token": answers[2]["structuredContent"]["confirmation_token"]}

    answers, stderr = stdio_exchange(
        {"OPT_MCP_LOG_FORMAT": "json", "OPT_MCP_CONFIRM": "token"},
        [
            ("get_flag", {"flag_key": "product_sort"}),
            ("get_flag", {"flag_key": "no_such_flag_xq"}),
            ("set_flag_enabled", toggle),
            ("set_flag_enabled", confirmed),
        ],
    )
    token = answers[2]["structuredContent"]["confirmation_token"]
    assert answers[3]["structuredContent"]["status"] == "written"
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is JSON: nothing else on stderr
    calls = [line for line in lines if line["logger"] == "opt_mcp.calls"]
    assert [(c["tool"], c["outcome"]) for c in calls] == [
        ("get_flag", "ok"),
        ("get_flag", "tool error"),
        ("set_flag_enabled", "ok"),
        ("set_flag_enabled", "ok"),
    ]
    assert calls[0]["api_calls"] == 1
    assert calls[1]["api_calls"] >= 2  # the miss, then searches for close keys
    assert calls[3]["api_calls"] >= 3  # a fresh look, the write, the check after it
    for call in calls:
        assert call["duration_ms"] > 0
        assert call["result_tokens"] > 0
    sizes = [len(json.dumps(a, ensure_ascii=False)) for a in answers]
    assert calls[0]["result_tokens"] >= sizes[0] / 6  # a real measure of the result, not a constant
    (audit,) = [line for line in lines if line["logger"] == "opt_mcp.audit"]
    assert audit["outcome"] == "written"
    assert audit["revision_after"] == {"product_sort/development": 2}
    assert token not in stderr
    assert "no_such_flag_xq" not in stderr
    assert any("embedded sandbox" in line["message"] for line in lines)


@pytest.mark.slow
def test_text_lines_by_default() -> None:
    _, stderr = stdio_exchange({}, [("list_flags", {"limit": 1})])
    assert "opt-mcp INFO opt_mcp.calls: list_flags ok in " in stderr
    assert "1 API call(s)" in stderr
    assert not stderr.lstrip().startswith("{")


def test_a_wrong_log_format_is_named() -> None:
    with pytest.raises(ValueError, match="OPT_MCP_LOG_FORMAT must be text or json, not 'xml'"):
        LOG_FORMAT.read({"OPT_MCP_LOG_FORMAT": "xml"})
    assert LOG_FORMAT.read({}) == "text"
    assert LOG_FORMAT.read({"OPT_MCP_LOG_FORMAT": " JSON "}) == "json"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_in_memory_calls_are_logged_with_their_api_calls(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.INFO, logger="opt_mcp.calls")
    async with Client(make_server(sandbox), mode=mode) as c:
        await c.call_tool("list_projects", {})
        await c.call_tool("list_flags", {"limit": 200})  # refused by validation: no API call
    records = [r for r in caplog.records if r.name == "opt_mcp.calls"]
    fields = [r.fields for r in records]  # type: ignore[attr-defined]
    assert [(f["tool"], f["outcome"], f["api_calls"]) for f in fields] == [
        ("list_projects", "ok", 1),
        ("list_flags", "tool error", 0),
    ]
    formatted = json.loads(JsonLines().format(records[0]))
    assert formatted["tool"] == "list_projects"
    assert formatted["level"] == "info"
