"""The contract points the specs leave open (docs/sandbox.md, "Readings"): for each, the sandbox answers one way or
the other, and every tool gives the same right answer under both."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from opt_mcp.api.models import RulesetRule
from opt_mcp.sandbox import SEED_PROJECT_ID, Fault, Readings, Sandbox, SandboxConfig, SandboxLimits
from tests.helpers import MODES, data, make, text, writes

pytestmark = pytest.mark.anyio
PID = SEED_PROJECT_ID


def sandbox_with(flags: int = 0, **readings: Any) -> Sandbox:
    return Sandbox(
        SandboxConfig(flags=flags, seed=5, rate_limits=SandboxLimits.unlimited(), readings=Readings(**readings))
    )


def client(sandbox: Sandbox, mode: str = "auto") -> Client:
    return Client(make(sandbox, confirm="token"), mode=mode)


async def confirmed(c: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Preview, then the call the user approved: the write result."""
    preview = data(await c.call_tool(tool, arguments))
    assert preview["status"] == "preview", preview
    return data(await c.call_tool(tool, {**arguments, "confirmation_token": preview["confirmation_token"]}))


# ------------------------------------------------------------------------------------------------------------------
# archived: a list that does not name it
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("default", ["unarchived", "all"])
@pytest.mark.parametrize("mode", MODES)
async def test_archive_and_unarchive_whatever_a_list_returns_by_default(default: str, mode: str) -> None:
    sandbox = sandbox_with(archived_default=default)
    async with client(sandbox, mode) as c:
        archived = await confirmed(c, "archive_flags", {"flag_keys": ["product_sort"]})
        again = data(await c.call_tool("archive_flags", {"flag_keys": ["product_sort", "homepage_hero"]}))
        back = await confirmed(c, "unarchive_flags", {"flag_keys": ["product_sort"]})
        twice = data(await c.call_tool("unarchive_flags", {"flag_keys": ["product_sort", "homepage_hero"]}))
    assert archived["results"] == {"product_sort": "archived"}
    assert "product_sort: already archived, left as it is" in again["effects"]
    assert back["results"] == {"product_sort": "unarchived"}
    assert not sandbox.store.projects[PID].flags["product_sort"].fields["archived"]
    assert "product_sort: already unarchived, left as it is" in twice["effects"]
    assert "homepage_hero: already unarchived, left as it is" in twice["effects"]
    lists = [r.query for r in sandbox.requests("GET", r"/flags$")]
    assert lists and all("archived=" in query for query in lists)  # never the undocumented default


async def test_an_unknown_key_is_refused_only_after_a_get_confirms_it() -> None:
    sandbox = sandbox_with()
    async with client(sandbox) as c:
        result = await c.call_tool("unarchive_flags", {"flag_keys": ["product_sort", "no_such_flag"]})
    assert result.is_error and "no_such_flag" in text(result) and "product_sort" not in text(result).split(":")[-1]
    assert [r.status for r in sandbox.requests("GET", "/flags/no_such_flag$")] == [404]
    assert writes(sandbox) == []


# ------------------------------------------------------------------------------------------------------------------
# key_list: honoured, or ignored like an unknown parameter
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_list", ["honoured", "ignored"])
@pytest.mark.parametrize("mode", MODES)
async def test_bulk_writes_find_their_flags_whether_key_list_is_honoured(key_list: str, mode: str) -> None:
    sandbox = sandbox_with(flags=120, key_list=key_list)
    project = sandbox.store.projects[PID]
    live = sorted(k for k, f in project.flags.items() if not f.fields.get("archived"))[:3]
    gone = next(k for k, f in project.flags.items() if f.fields.get("archived"))
    async with client(sandbox, mode) as c:
        done = await confirmed(c, "archive_flags", {"flag_keys": [*live, gone]})
        unknown = await c.call_tool("archive_flags", {"flag_keys": [live[0], "missing_flag"]})
    assert done["results"] == {**dict.fromkeys(live, "archived"), gone: "unchanged (already in that state)"}
    assert all(project.flags[k].fields["archived"] for k in live)
    assert unknown.is_error and "missing_flag" in text(unknown)
    assert writes(sandbox) == [f"POST /flags/v1/projects/{PID}/flags/archived"]
    one_by_one = {r.path.rsplit("/", 1)[-1] for r in sandbox.requests("GET", r"/flags/[^/]+$")}
    lists = [r.query for r in sandbox.requests("GET", r"/flags$")]
    assert "missing_flag" in one_by_one and all("key_list=" in query for query in lists)
    # A list answering with other flags is taken for what it is: never a walk of every page of the project.
    assert not any("page_token" in query or "page_number" in query for query in lists)
    if key_list == "honoured":
        # One list per state finds them: only the unknown key is fetched on its own, to confirm it.
        assert one_by_one == {"missing_flag"}
    else:
        assert len(one_by_one) > 1


# ------------------------------------------------------------------------------------------------------------------
# enable/disable: 200 with the ruleset, or 204 without a body
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["ruleset", "no_content"])
@pytest.mark.parametrize("mode", MODES)
async def test_toggles_read_the_ruleset_back_when_the_answer_has_none(answer: str, mode: str) -> None:
    sandbox = sandbox_with(toggle_answer=answer)
    toggle = {"flag_key": "product_sort", "environment": "production", "enabled": False}
    async with client(sandbox, mode) as c:
        off = await confirmed(c, "set_flag_enabled", toggle)
        on = await confirmed(c, "set_flag_enabled", {**toggle, "enabled": True})
    path = f"/flags/v1/projects/{PID}/flags/product_sort/environments/production/ruleset"
    assert off["status"] == on["status"] == "written"
    assert off.get("warnings", []) == on.get("warnings", []) == []
    ruleset = sandbox.store.projects[PID].flags["product_sort"].rulesets["production"]
    assert ruleset.enabled and on["revisions"] == {"product_sort/production": ruleset.revision}
    assert [r.status for r in sandbox.requests("POST", "/ruleset/")] == (
        [200, 200] if answer == "ruleset" else [204] * 2
    )
    sent = [f"{r.method} {r.path}" for r in sandbox.requests()]
    after_each_write = [sent[i + 1] if i + 1 < len(sent) else None for i, r in enumerate(sent) if r.startswith("POST")]
    # An answer without the ruleset is followed by a read of it; an answer with it, by nothing.
    if answer == "no_content":
        assert after_each_write == [f"GET {path}", f"GET {path}"]
    else:  # the next call's preview, which reads the flag first; nothing after the last write
        assert after_each_write == [f"GET /flags/v1/projects/{PID}/flags/product_sort", None]


async def test_a_failed_read_back_after_204_says_the_change_was_accepted() -> None:
    sandbox = sandbox_with(toggle_answer="no_content")
    toggle = {"flag_key": "product_sort", "environment": "production", "enabled": False}
    async with client(sandbox) as c:
        token = data(await c.call_tool("set_flag_enabled", toggle))["confirmation_token"]
        # The confirmed call's own reads pass (its preview, then the guard's re-check); every later read fails.
        sandbox.faults.add(Fault("status", path="/ruleset$", method="GET", status=500, times=None, skip=2))
        result = await c.call_tool("set_flag_enabled", {**toggle, "confirmation_token": token})
    assert result.is_error and "accepted the change (HTTP 204)" in text(result)
    assert not sandbox.store.projects[PID].flags["product_sort"].rulesets["production"].enabled


# ------------------------------------------------------------------------------------------------------------------
# audience_conditions: an array, or the string forms
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["array", "string"])
@pytest.mark.parametrize("mode", MODES)
async def test_rulesets_read_in_either_audience_form(form: str, mode: str) -> None:
    sandbox = sandbox_with(audience_conditions=form)
    on = sandbox.store.projects[PID].flags["homepage_hero"].rulesets["production"].enabled
    async with client(sandbox, mode) as c:
        preview = data(
            await c.call_tool(
                "set_flag_enabled", {"flag_key": "homepage_hero", "environment": "production", "enabled": not on}
            )
        )
    raw = [r for r in sandbox.requests("GET", "/ruleset$") if r.status == 200]
    assert raw and preview["status"] == "preview" and preview["effects"]


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("everyone", []),
        ("", []),
        ('"everyone"', []),
        ('["or", {"audience_id": 1038980040}]', ["or", {"audience_id": 1038980040}]),
        (["and", {"audience_id": 5}], ["and", {"audience_id": 5}]),
        (None, None),
    ],
)
def test_audience_conditions_in_every_form_of_the_spec(given: Any, read: Any) -> None:
    rule = RulesetRule.model_validate({"key": "r", "name": "R", "type": "a/b", "audience_conditions": given})
    assert rule.audience_conditions == read


@pytest.mark.parametrize("odd", ["beta users", '{"audience_id": 1}', 42, {"audience_id": 1}])
def test_audience_conditions_in_no_form_of_the_spec_read_as_unknown_not_as_an_unreadable_rule(odd: Any) -> None:
    rule = RulesetRule.model_validate({"key": "r", "name": "R", "type": "a/b", "audience_conditions": odd})
    assert rule.audience_conditions is None


# ------------------------------------------------------------------------------------------------------------------
# A patch of several operations: revision per request or per operation
# ------------------------------------------------------------------------------------------------------------------

THREE = [
    {"op": "replace", "path": "/description", "value": "Sorted"},
    {"op": "replace", "path": "/name", "value": "Product sort"},
    {"op": "replace", "path": "/outlier_filtering_enabled", "value": True},
]


@pytest.mark.parametrize("step", ["request", "operation"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_multi_operation_patch_is_not_mistaken_for_someone_elses_write(step: str, mode: str) -> None:
    sandbox = sandbox_with(revision_step=step)
    before = sandbox.store.projects[PID].flags["product_sort"].fields["revision"]
    async with client(sandbox, mode) as c:
        done = await confirmed(c, "patch_flag", {"flag_key": "product_sort", "operations": THREE})
    after = before + (1 if step == "request" else 3)
    assert done["revisions"] == {"product_sort": after} and done.get("warnings", []) == []


async def test_a_write_in_between_is_still_named_with_the_revision_expected() -> None:
    sandbox = sandbox_with()
    flag = sandbox.store.projects[PID].flags["product_sort"]
    before = flag.fields["revision"]
    arguments = {"flag_key": "product_sort", "operations": THREE}
    async with client(sandbox) as c:
        token = data(await c.call_tool("patch_flag", arguments))["confirmation_token"]
        # After the guard's last check, someone else writes five times while the patch is on its way.
        bump = Fault("latency", path="/flags$", method="PATCH", then=lambda: flag.fields.update(revision=before + 5))
        sandbox.faults.add(bump)
        outcome = data(await c.call_tool("patch_flag", {**arguments, "confirmation_token": token}))
    # 6 is more than 3 operations can explain, whichever way Optimizely counts
    assert outcome["revisions"] == {"product_sort": before + 6}
    assert any(f"expected {before + 1} to {before + 3} for 3 operations" in w for w in outcome["warnings"])


# ------------------------------------------------------------------------------------------------------------------
# list_flags: enabled= and rule_type= with environment=
# ------------------------------------------------------------------------------------------------------------------


async def _every_key(c: Client, arguments: dict[str, Any]) -> list[str]:
    keys: list[str] = []
    cursor = None
    while True:
        more: dict[str, str] = {"cursor": cursor} if cursor else {}
        page = data(await c.call_tool("list_flags", {**arguments, "limit": 100, **more}))
        keys += [flag["key"] for flag in page["flags"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return keys


@pytest.mark.parametrize("scoping", ["scoped", "any"])
@pytest.mark.parametrize(
    "arguments",
    [{"enabled": False}, {"enabled": True}, {"rule_type": "a/b"}, {"enabled": True, "rule_type": "targeted_delivery"}],
)
async def test_list_flags_judges_filters_in_the_environment_named(scoping: str, arguments: dict[str, Any]) -> None:
    sandbox = sandbox_with(flags=150, environment_scoping=scoping)
    project = sandbox.store.projects[PID]

    def truth(key: str) -> bool:
        flag = project.flags[key]
        ruleset = flag.rulesets["development"]
        if flag.fields.get("archived"):
            return False
        if "enabled" in arguments and ruleset.enabled != arguments["enabled"]:
            return False
        return "rule_type" not in arguments or any(r["type"] == arguments["rule_type"] for r in ruleset.rules.values())

    async with client(sandbox) as c:
        keys = await _every_key(c, {"environment": "development", **arguments})
    expected = {key for key in project.flags if truth(key)}
    assert expected and set(keys) == expected and len(keys) == len(set(keys))
