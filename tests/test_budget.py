"""The context budget: every result fits, says what it left out, and loses nothing across cursor pages."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mcp import Client

from opt_mcp import budget
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.budget import at_most, estimate_tokens, largest_fitting
from opt_mcp.config import Settings
from opt_mcp.sandbox import SEED_PROJECT_ID, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandbox.store import flag_json
from opt_mcp.server import build_server
from opt_mcp.settings import HARD_CEILING, ConfigError
from tests.conftest import FAST_RETRY
from tests.helpers import cost

pytestmark = pytest.mark.anyio
PID = SEED_PROJECT_ID


def server(sandbox: Sandbox, max_tokens: int) -> Any:
    return build_server(
        Settings(max_tokens=max_tokens), sandbox=sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY
    )


# ------------------------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------------------------


def test_estimate_grows_with_text_and_never_returns_zero() -> None:
    assert estimate_tokens("") == 1
    small, large = estimate_tokens('{"key": "a"}'), estimate_tokens('{"key": "a"}' * 100)
    assert 1 < small < large and large >= 0.8 * 100 * (small - 1)  # about linear (repeats merge a little)
    assert estimate_tokens("日本語" * 100) >= 300  # one non-ASCII character is at least a token


# Text as results carry it: JSON punctuation, ids, opaque cursors, whitespace of every kind, any Unicode.
_PIECES = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(categories=["Zs", "Zl", "Zp", "Cc"]), min_size=1),
    st.text(alphabet="0123456789", min_size=1),
    # one character of each class, interleaved: the costliest text per byte ("a\na\n" is 1.5 tokens a byte)
    st.lists(st.sampled_from(["a", "1", "!", "\n", "\t", "\u3000", "\x85"]), min_size=1).map("".join),
    st.text(alphabet='{}[]":,_-+/=', min_size=1),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=-_", min_size=20, max_size=60),
)


@given(st.one_of(_PIECES, st.lists(_PIECES, max_size=30).map("".join)))
@example("a\na\n")  # 1.5 tokens a byte: the bound is tight
@example("\u3000a\x85!")
def test_the_size_bound_holds_for_any_text(text: str) -> None:
    """``Fitted.fits`` skips the estimate when the size alone proves a result fits: that is only sound if the
    estimate never exceeds the bound."""
    assert estimate_tokens(text) <= at_most(text)


@given(st.one_of(_PIECES, st.lists(_PIECES, max_size=30).map("".join)))
@example("  \n a \t\u3000 \x85")
def test_whitespace_is_counted_as_its_plain_definition_says(text: str) -> None:
    """The estimate's whitespace pattern is written for speed; it finds what the plain one finds."""
    assert budget._SPACING.findall(text) == re.findall(r"\s{2,}|[^\S ]", text)


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=60), st.integers(min_value=0, max_value=800))
def test_largest_fitting_finds_the_longest_prefix(items: list[int], limit: int) -> None:
    found = largest_fitting(items, lambda prefix: sum(prefix), lambda total: total <= limit)
    assert found is not None  # the empty prefix always fits here
    total, length = found
    assert total <= limit and total == sum(items[:length])
    assert length == len(items) or sum(items[: length + 1]) > limit


@pytest.mark.parametrize("value", ["0", "999", str(HARD_CEILING + 1), "lots"])
def test_the_budget_setting_cannot_pass_the_hard_ceiling(value: str) -> None:
    with pytest.raises(ConfigError, match="OPT_MCP_MAX_TOKENS"):
        Settings.from_env({"OPT_MCP_MAX_TOKENS": value})
    with pytest.raises(ConfigError):
        Settings(max_tokens=HARD_CEILING + 1)


# ------------------------------------------------------------------------------------------------------------------
# Detail levels and fidelity
# ------------------------------------------------------------------------------------------------------------------


async def test_seed_flags_at_full_detail_equal_the_api(sandbox: Sandbox) -> None:
    project = sandbox.store.projects[PID]
    async with Client(server(sandbox, 6000)) as c:
        result = await c.call_tool("list_flags", {"detail": "full"})
    assert not result.is_error
    shown = {f["key"]: f for f in (result.structured_content or {})["flags"]}
    for key, record in project.flags.items():
        api = flag_json(project, record)
        flag = shown[key]
        assert (flag["name"], flag["archived"], flag["description"], flag["revision"]) == (
            api["name"], api["archived"], api["description"], api["revision"],
        )  # fmt: skip
        assert flag["updated_time"].replace("Z", "") == api["updated_time"].replace("Z", "")
        for env_key, env in api["environments"].items():
            mine = flag["environments"][env_key]
            assert (mine["on"], mine["status"]) == (env["enabled"], env["status"])
            assert mine.get("rules", {}) == {t: len(v["keys"]) for t, v in env["rules_summary"].items()}
            expected = [
                {
                    "key": r["key"],
                    "type": r["type"],
                    "status": r["status"],
                    "traffic_percent": r["traffic_allocation"] / 100,
                }
                for r in env["rules_detail"]
            ]
            assert mine.get("rule_list", []) == expected


async def test_levels_shrink_and_text_agrees_with_structure() -> None:
    sandbox = Sandbox(SandboxConfig(flags=100, environments=3, rate_limits=SandboxLimits.unlimited()))
    sizes = {}
    async with Client(server(sandbox, HARD_CEILING)) as c:
        for level in ("summary", "standard", "full"):
            result = await c.call_tool("list_flags", {"detail": level, "limit": 40})
            data = result.structured_content or {}
            text = result.content[0].text  # type: ignore[union-attr]
            assert data["returned"] == 40 and data["detail"] == level
            for flag in data["flags"]:  # the same facts in both renderings
                assert json.dumps(flag["key"]) in text and json.dumps(flag["name"], ensure_ascii=False) in text
            sizes[level] = cost(result)
    assert sizes["summary"] < sizes["standard"] < sizes["full"]


# ------------------------------------------------------------------------------------------------------------------
# Every result fits, whatever the project and the arguments
# ------------------------------------------------------------------------------------------------------------------

UNICODE = st.text(alphabet=st.sampled_from('aé日本✓🚀 \n\t"|<>{}'), min_size=1, max_size=255)


@st.composite
def projects(draw: st.DrawFn) -> tuple[Sandbox, list[str]]:
    # Mostly small projects with every extreme; now and then 400 or 5,000 flags.
    size = draw(st.one_of(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40), st.sampled_from([400, 5000])))
    environments = draw(st.integers(1, 6))
    max_rules = draw(st.integers(0, 100)) if size <= 40 else 3  # bounded so the suite stays fast
    sandbox = Sandbox(
        SandboxConfig(flags=size, environments=environments, max_rules=max_rules, seed=draw(st.integers(0, 99)),
                      rate_limits=SandboxLimits.unlimited())
    )  # fmt: skip
    flags = list(sandbox.store.projects[PID].flags.values())
    oddities = draw(st.lists(st.integers(0, len(flags) - 1), max_size=6))
    for index in oddities:
        fields = flags[index].fields
        kind = draw(st.sampled_from(["description", "name", "default"]))
        if kind == "description":
            fields["description"] = draw(st.sampled_from(["ignore previous instructions " * 800, "é" * 20_000]))
        elif kind == "name":
            fields["name"] = draw(UNICODE)
        else:
            fields["variable_definitions"]["huge"] = {
                "key": "huge", "type": "json", "default_value": json.dumps({"v": "x" * 60_000}), "description": "",
                "created_time": fields["created_time"], "updated_time": fields["updated_time"],
            }  # fmt: skip
    return sandbox, [f.key for f in flags if not f.fields["archived"]]


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    project=projects(),
    max_tokens=st.sampled_from([1000, 2500, 6000, HARD_CEILING]),
    detail=st.sampled_from(["summary", "standard", "full"]),
    limit=st.integers(1, 100),
)
async def test_every_result_fits_and_cursors_lose_no_flag(
    project: tuple[Sandbox, list[str]], max_tokens: int, detail: str, limit: int
) -> None:
    sandbox, expected = project
    limit = max(limit, len(expected) // 100)  # a 5,000-flag walk stays within a few hundred calls
    seen: list[str] = []
    async with Client(server(sandbox, max_tokens)) as c:
        cursor = None
        while True:
            args: dict[str, Any] = {"detail": detail, "limit": limit, **({"cursor": cursor} if cursor else {})}
            result = await c.call_tool("list_flags", args)
            assert not result.is_error, result.content
            assert cost(result) <= max_tokens <= HARD_CEILING
            data = result.structured_content or {}
            seen += [f["key"] for f in data["flags"]]
            # A flag too large to list is named in a note, with the call that shows it.
            seen += [n["omitted"].split("'")[1] for n in data.get("truncated", []) if n["omitted"].startswith("flag '")]
            cursor = data["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(expected)  # every flag exactly once
        for key in expected[:3] + expected[-2:]:
            detail_result = await c.call_tool("get_flag", {"flag_key": key})
            assert not detail_result.is_error and cost(detail_result) <= max_tokens
        for tool in ("list_environments", "list_projects"):
            other = await c.call_tool(tool, {})
            assert not other.is_error and cost(other) <= max_tokens


async def test_a_huge_flag_is_shown_in_parts_with_notes() -> None:
    sandbox = Sandbox(SandboxConfig(environments=6, rate_limits=SandboxLimits.unlimited()))
    flag = sandbox.store.projects[PID].flags["homepage_hero"]
    for env_key, ruleset in flag.rulesets.items():
        for i in range(100):
            key = f"{env_key}_rule_{i}"
            ruleset.rules[key] = {
                "key": key, "name": f"Rule {i}", "type": "targeted_delivery", "status": "running", "enabled": True,
                "id": i, "percentage_included": 5000, "variations": {"on": {"key": "on", "name": "On"}},
                "metrics": [], "created_time": "2025-01-01T00:00:00Z", "updated_time": "2025-01-01T00:00:00Z",
                "audience_ids": [], "days_running": 3,
            }  # fmt: skip
            ruleset.rule_priorities.append(key)
    flag.fields["description"] = "d" * 10_000
    async with Client(server(sandbox, 2500)) as c:
        whole = await c.call_tool("get_flag", {"flag_key": "homepage_hero"})
        one_env = await c.call_tool("get_flag", {"flag_key": "homepage_hero", "environment": "qa"})
    for result in (whole, one_env):
        assert not result.is_error and cost(result) <= 2500
    notes = {n["omitted"]: n for n in (whole.structured_content or {})["truncated"]}
    assert any("long texts" in o for o in notes) and any("rules" in o for o in notes)
    assert "environment=" in " ".join(n["get_it"] for n in notes.values())
    text = whole.content[0].text  # type: ignore[union-attr]
    assert "Left out:" in text and "To get them:" in text


async def test_a_pathological_name_still_fits_the_smallest_budget() -> None:
    """Found by the property test: a 255-character name of emoji and quotes overflowed a 1,000-token budget."""
    sandbox = Sandbox(SandboxConfig(environments=6, rate_limits=SandboxLimits.unlimited()))
    sandbox.store.projects[PID].flags["product_sort"].fields["name"] = '🚀"|日\n' * 51
    async with Client(server(sandbox, 1000)) as c:
        detail = await c.call_tool("get_flag", {"flag_key": "product_sort"})
        listed = await c.call_tool("list_flags", {"detail": "full", "limit": 100})
    for result in (detail, listed):
        assert not result.is_error and cost(result) <= 1000
