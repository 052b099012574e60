"""Guarded writes, proven with the sandbox's request log: nothing is written that the user did not see and approve."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.guard import FileLedger, Refused, Stale, StoreLedger, TokenSigner
from opt_mcp.sandbox import SEED_PROJECT_ID, Fault, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandboxed import sandbox_client
from opt_mcp.shared import MemoryStore
from tests.helpers import User, data, make, text, writes

pytestmark = pytest.mark.anyio
PID = SEED_PROJECT_ID
MODES = ["auto", "legacy"]
WRITE_TOOLS = {"patch_flag", "archive_flags", "unarchive_flags", "set_flag_enabled"}
DESCRIBE = {"flag_key": "product_sort", "operations": [{"op": "replace", "path": "/description", "value": "Sorted"}]}


# ------------------------------------------------------------------------------------------------------------------
# Listing
# ------------------------------------------------------------------------------------------------------------------


async def test_read_only_mode_lists_no_write_tool(sandbox: Sandbox) -> None:
    async with Client(make(sandbox, read_only=True)) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        result = await c.call_tool("patch_flag", DESCRIBE)
    assert names.isdisjoint(WRITE_TOOLS) and "list_flags" in names
    assert result.is_error and writes(sandbox) == []


async def test_write_tools_carry_truthful_annotations(sandbox: Sandbox) -> None:
    async with Client(make(sandbox)) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    for name in WRITE_TOOLS:
        hints = tools[name].annotations
        assert hints is not None and hints.read_only_hint is False and hints.idempotent_hint is False
        assert hints.destructive_hint is (name != "unarchive_flags")
        assert "confirmation_token" in tools[name].input_schema["properties"]


# ------------------------------------------------------------------------------------------------------------------
# Elicitation
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_approved_in_the_client_writes_once_and_returns_the_diff(sandbox: Sandbox, mode: str) -> None:
    user = User()
    async with Client(make(sandbox), mode=mode, elicitation_callback=user) as c:
        result = data(await c.call_tool("patch_flag", DESCRIBE))
    assert result["status"] == "written" and result["revisions"] == {"product_sort": 4}
    assert result["changes"] == [{"path": "/description", "before": "", "after": "Sorted"}]
    assert len(user.shown) == 1
    assert '"Sorted"' in user.shown[0] or "'Sorted'" in user.shown[0]
    assert writes(sandbox) == [f"PATCH /flags/v1/projects/{PID}/flags"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("action", "confirm"), [("decline", True), ("cancel", True), ("accept", False)])
async def test_declined_cancelled_or_unticked_writes_nothing(
    sandbox: Sandbox, mode: str, action: str, confirm: bool
) -> None:
    async with Client(make(sandbox), mode=mode, elicitation_callback=User(action, confirm)) as c:
        result = data(await c.call_tool("archive_flags", {"flag_keys": ["product_sort"]}))
    assert result["status"] == "declined" and "nothing was written" in text_of(result)
    assert writes(sandbox) == []


def text_of(result: dict[str, Any]) -> str:
    return json.dumps(result).lower()


# Each write tool, called in an order where each has something to do: homepage_hero is archived before it is
# unarchived, and product_sort is on in production.
EACH_WRITE: list[tuple[str, dict[str, Any]]] = [
    ("patch_flag", DESCRIBE),
    ("archive_flags", {"flag_keys": ["homepage_hero"]}),
    ("unarchive_flags", {"flag_keys": ["homepage_hero"]}),
    ("set_flag_enabled", {"flag_key": "product_sort", "environment": "production", "enabled": False}),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("confirm", [True, False])
async def test_every_write_tool_asks_in_the_client_once(sandbox: Sandbox, mode: str, confirm: bool) -> None:
    """Each tool's ask resolver (one factory makes them all) asks about its own tool's preview, in both eras."""
    user = User(confirm=confirm)
    async with Client(make(sandbox), mode=mode, elicitation_callback=user) as c:
        statuses = [data(await c.call_tool(tool, arguments))["status"] for tool, arguments in EACH_WRITE]
    assert [message.split(":")[0] for message in user.shown] == [f"Confirm {tool}" for tool, _ in EACH_WRITE]
    assert all("revisions: " in message for message in user.shown)
    assert statuses == ["written" if confirm else "declined"] * len(EACH_WRITE)
    assert len(writes(sandbox)) == (len(EACH_WRITE) if confirm else 0)


async def test_a_change_before_the_answer_writes_nothing_legacy(sandbox: Sandbox) -> None:
    async def someone_else_edits(_: int) -> None:
        async with sandbox_client(sandbox, rate_limits=RateLimits.unlimited()) as other:
            await other.patch_flags(PID, [{"op": "replace", "path": "/product_sort/name", "value": "Renamed"}])

    async with Client(make(sandbox), mode="legacy", elicitation_callback=User(before_answer=someone_else_edits)) as c:
        result = data(await c.call_tool("patch_flag", DESCRIBE))
    assert result["status"] == "changed" and result["revisions"] == {"product_sort": 4}
    assert len(writes(sandbox)) == 1  # only the other person's PATCH


async def test_a_change_before_the_answer_is_asked_again_2026(sandbox: Sandbox) -> None:
    async def someone_else_edits_once(round_: int) -> None:
        if round_ == 1:
            async with sandbox_client(sandbox, rate_limits=RateLimits.unlimited()) as other:
                await other.patch_flags(PID, [{"op": "replace", "path": "/product_sort/name", "value": "Renamed"}])

    user = User(before_answer=someone_else_edits_once)
    async with Client(make(sandbox), mode="auto", elicitation_callback=user) as c:
        result = data(await c.call_tool("patch_flag", DESCRIBE))
    # The first answer was for an older preview: the SDK asked again with the new one, and only that was written.
    assert len(user.shown) == 2 and "product_sort 3" in user.shown[0] and "product_sort 4" in user.shown[1]
    assert result["status"] == "written" and result["revisions"] == {"product_sort": 5}
    assert len(writes(sandbox)) == 2


# ------------------------------------------------------------------------------------------------------------------
# Confirmation tokens
# ------------------------------------------------------------------------------------------------------------------


async def test_token_preview_then_confirm_then_replay(sandbox: Sandbox) -> None:
    async with Client(make(sandbox)) as c:  # no elicitation callback: the token path
        preview = data(await c.call_tool("patch_flag", DESCRIBE))
        assert preview["status"] == "preview" and writes(sandbox) == []
        token = preview["confirmation_token"]
        done = data(await c.call_tool("patch_flag", {**DESCRIBE, "confirmation_token": token}))
        again = {**DESCRIBE, "operations": [{"op": "replace", "path": "/description", "value": "Sorted again"}]}
        replay_other = await c.call_tool("patch_flag", {**again, "confirmation_token": token})
    assert done["status"] == "written" and done["revisions"] == {"product_sort": 4}
    assert replay_other.is_error and "other arguments" in text(replay_other)
    assert writes(sandbox) == [f"PATCH /flags/v1/projects/{PID}/flags"]


async def test_token_for_other_arguments_is_refused(sandbox: Sandbox) -> None:
    async with Client(make(sandbox)) as c:
        token = data(
            await c.call_tool(
                "set_flag_enabled", {"flag_key": "homepage_hero", "environment": "development", "enabled": True}
            )
        )["confirmation_token"]
        other = await c.call_tool(
            "set_flag_enabled",
            {"flag_key": "homepage_hero", "environment": "production", "enabled": True, "confirmation_token": token},
        )
        tool = await c.call_tool("archive_flags", {"flag_keys": ["homepage_hero"], "confirmation_token": token})
    for result in (other, tool):
        assert result.is_error and "confirmation_token" in text(result) and "Nothing was written" in text(result)
    assert writes(sandbox) == []


@pytest.mark.parametrize("tamper", ["forged", "malformed", "expired"])
async def test_forged_malformed_and_expired_tokens_are_refused(sandbox: Sandbox, tamper: str) -> None:
    server = make(sandbox, token_ttl=-1.0 if tamper == "expired" else 600.0)
    async with Client(server) as c:
        token = data(await c.call_tool("archive_flags", {"flag_keys": ["homepage_hero"]}))["confirmation_token"]
        if tamper == "forged":
            token = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        elif tamper == "malformed":
            token = "not-a-token"
        result = await c.call_tool("archive_flags", {"flag_keys": ["homepage_hero"], "confirmation_token": token})
    expected = {"forged": "not one this server issued", "malformed": "malformed", "expired": "expired"}[tamper]
    assert result.is_error and expected in text(result)
    assert writes(sandbox) == []


async def test_a_token_from_another_server_secret_is_forged(sandbox: Sandbox) -> None:
    async with Client(make(sandbox, secret=b"a" * 32)) as one:
        token = data(await one.call_tool("archive_flags", {"flag_keys": ["homepage_hero"]}))["confirmation_token"]
    async with Client(make(sandbox, secret=b"b" * 32)) as two:
        result = await two.call_tool("archive_flags", {"flag_keys": ["homepage_hero"], "confirmation_token": token})
    assert result.is_error and "not one this server issued" in text(result) and writes(sandbox) == []


async def test_a_change_between_preview_and_confirm_returns_a_fresh_preview(sandbox: Sandbox) -> None:
    async with Client(make(sandbox)) as c:
        token = data(await c.call_tool("patch_flag", DESCRIBE))["confirmation_token"]
        async with sandbox_client(sandbox, rate_limits=RateLimits.unlimited()) as other:
            await other.patch_flags(PID, [{"op": "replace", "path": "/product_sort/name", "value": "Renamed"}])
        stale = data(await c.call_tool("patch_flag", {**DESCRIBE, "confirmation_token": token}))
        fresh = data(await c.call_tool("patch_flag", {**DESCRIBE, "confirmation_token": stale["confirmation_token"]}))
    assert stale["status"] == "changed" and stale["revisions"] == {"product_sort": 4} and stale["confirmation_token"]
    assert fresh["status"] == "written" and fresh["revisions"] == {"product_sort": 5}
    assert len(writes(sandbox)) == 2  # the other person's, then the one confirmed on the fresh preview


async def test_signer_units() -> None:
    ledger = StoreLedger(MemoryStore())
    signer = TokenSigner(b"k" * 32, ledger)
    token, _ = signer.issue("t", {"a": 1}, {"f": 1})
    with pytest.raises(Stale):
        await signer.redeem(token, "t", {"a": 1}, {"f": 2})
    await signer.redeem(token, "t", {"a": 1}, {"f": 1})
    with pytest.raises(Refused, match="already used"):
        await signer.redeem(token, "t", {"a": 1}, {"f": 1})
    with pytest.raises(ValueError, match="32 bytes"):
        TokenSigner(b"short", ledger)
    assert "k" * 32 not in repr(signer)


async def test_a_file_ledger_is_shared_by_every_process_that_opens_it(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite")
    first, second = FileLedger(path), FileLedger(path)  # as two worker processes open it
    assert await first.use("token-a", time.time() + 60)
    assert not await second.use("token-a", time.time() + 60)  # used on one worker: used on all
    assert await second.use("token-b", time.time() + 60)
    assert await first.use("expired", time.time() - 1) and await second.use("expired", time.time() + 60)


# ------------------------------------------------------------------------------------------------------------------
# Patch paths
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/revision", "revision"),
        ("/key", "key"),
        ("/archived", "archive_flags"),
        ("/environments/production/enabled", "set_flag_enabled"),
        ("/homepage_hero/description", "homepage_hero"),
        ("/variable_definitions/sort_method/created_time", "created_time"),
        ("/description/x", "single value"),
        ("/..", ".."),
        ("", "empty"),
        ("description", "JSON Pointer"),
    ],
)
async def test_invalid_or_read_only_paths_are_refused_naming_the_field(sandbox: Sandbox, path: str, named: str) -> None:
    async with Client(make(sandbox), elicitation_callback=User()) as c:
        result = await c.call_tool(
            "patch_flag", {"flag_key": "product_sort", "operations": [{"op": "replace", "path": path, "value": "x"}]}
        )
    assert result.is_error and named in text(result) and "operations[0]" in text(result)
    assert writes(sandbox) == []


async def test_paths_may_start_with_the_flag_key_and_containers_warn(sandbox: Sandbox) -> None:
    operations = [
        {"op": "replace", "path": "/product_sort/variable_definitions/sort_method/default_value", "value": "newest"},
        {
            "op": "replace",
            "path": "/variable_definitions/display_sort_algorithm",
            "value": {"key": "display_sort_algorithm", "type": "boolean", "default_value": "false"},
        },
        {"op": "add", "path": "/team_ids", "value": ["growth"]},
    ]
    async with Client(make(sandbox)) as c:
        preview = data(await c.call_tool("patch_flag", {"flag_key": "product_sort", "operations": operations}))
    paths = {change["path"]: change for change in preview["changes"]}
    assert paths["/variable_definitions/sort_method/default_value"] == {
        "path": "/variable_definitions/sort_method/default_value", "before": "alphabetical", "after": "newest",
    }  # fmt: skip
    assert any("/variable_definitions/display_sort_algorithm is replaced as a whole" in w for w in preview["warnings"])
    assert paths["/team_ids"] == {"path": "/team_ids", "after": ["growth"]}  # no "before": it did not exist


async def test_a_patch_that_cannot_apply_or_changes_nothing_is_refused(sandbox: Sandbox) -> None:
    async with Client(make(sandbox)) as c:
        missing = await c.call_tool(
            "patch_flag",
            {"flag_key": "product_sort", "operations": [{"op": "remove", "path": "/variable_definitions/nope"}]},
        )
        same = await c.call_tool(
            "patch_flag",
            {"flag_key": "product_sort", "operations": [{"op": "replace", "path": "/name", "value": "Product sort"}]},
        )
        bad_value = await c.call_tool(
            "patch_flag",
            {
                "flag_key": "product_sort",
                "operations": [
                    {"op": "replace", "path": "/variable_definitions/sort_method/default_value", "value": 5}
                ],
            },
        )
    assert missing.is_error and "cannot be applied" in text(missing)
    assert same.is_error and "change nothing" in text(same)
    assert bad_value.is_error and "default_value must be a string" in text(bad_value)
    assert writes(sandbox) == []


SAFE_PATHS = [
    "/name", "/description", "/outlier_filtering_enabled", "/variable_definitions/sort_method/default_value",
    "/variable_definitions/new_var", "/team_ids", "/revision", "/key", "/environments", "/other/description",
]  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    operations=st.lists(
        st.fixed_dictionaries(
            {
                "op": st.sampled_from(["add", "remove", "replace", "test"]),
                "path": st.sampled_from(SAFE_PATHS),
                "value": st.one_of(
                    st.text(max_size=20),
                    st.booleans(),
                    st.integers(),
                    st.just(["a"]),
                    st.just({"key": "new_var", "type": "string", "default_value": "x"}),
                ),
            }
        ),
        min_size=1,
        max_size=4,
    )
)
async def test_patch_property_never_writes_unconfirmed_and_writes_exactly_the_preview(
    operations: list[dict[str, Any]],
) -> None:
    sandbox = Sandbox(SandboxConfig(rate_limits=SandboxLimits.unlimited()))
    async with Client(make(sandbox)) as c:
        preview = await c.call_tool("patch_flag", {"flag_key": "product_sort", "operations": operations})
        assert writes(sandbox) == []  # a preview never writes
        if preview.is_error:
            return
        token = (preview.structured_content or {})["confirmation_token"]
        done = data(
            await c.call_tool(
                "patch_flag", {"flag_key": "product_sort", "operations": operations, "confirmation_token": token}
            )
        )
        after = data(await c.call_tool("get_flag", {"flag_key": "product_sort"}))
    previewed = (preview.structured_content or {}).get("warnings", [])
    assert done["status"] == "written" and done.get("warnings", []) == previewed  # no after-write surprise
    assert done["revisions"] == {"product_sort": 4} and after["revision"] == 4
    assert len(writes(sandbox)) == 1


# ------------------------------------------------------------------------------------------------------------------
# Archive and toggle
# ------------------------------------------------------------------------------------------------------------------


async def test_archive_preview_lists_what_stops_and_unknown_keys_stop_everything(sandbox: Sandbox) -> None:
    async with Client(make(sandbox)) as c:
        preview = data(await c.call_tool("archive_flags", {"flag_keys": ["product_sort", "homepage_hero"]}))
        unknown = await c.call_tool("archive_flags", {"flag_keys": ["product_sort", "no_such_flag"]})
    effects = " ".join(preview["effects"])
    assert "product_sort: production is ON (running): it stops serving and is paused" in effects
    assert "'experiment' in production is running, 135 days running" in effects
    assert unknown.is_error and "no_such_flag" in text(unknown) and "nothing was written" in text(unknown)
    assert writes(sandbox) == []


async def test_large_archives_go_in_chunks_with_per_key_results() -> None:
    sandbox = Sandbox(SandboxConfig(flags=130, rate_limits=SandboxLimits.unlimited()))
    keys = [k for k, f in sandbox.store.projects[PID].flags.items() if not f.fields["archived"]][:120]
    async with Client(make(sandbox)) as c:
        token = data(await c.call_tool("archive_flags", {"flag_keys": keys}))["confirmation_token"]
        done = data(await c.call_tool("archive_flags", {"flag_keys": keys, "confirmation_token": token}))
    assert writes(sandbox) == [f"POST /flags/v1/projects/{PID}/flags/archived"] * 3
    assert done["results"] == dict.fromkeys(keys, "archived")


async def test_unarchive_round_trip(sandbox: Sandbox) -> None:
    async with Client(make(sandbox), elicitation_callback=User()) as c:
        data(await c.call_tool("archive_flags", {"flag_keys": ["product_sort"]}))
        back = data(await c.call_tool("unarchive_flags", {"flag_keys": ["product_sort"]}))
        flag = data(await c.call_tool("get_flag", {"flag_key": "product_sort"}))
    assert back["results"] == {"product_sort": "unarchived"} and not flag["archived"]
    assert not flag["environments"][0]["enabled"]  # environments come back off, as the preview said


async def test_toggle_preview_names_the_rules_that_start_serving(sandbox: Sandbox) -> None:
    async with Client(make(sandbox), elicitation_callback=User()) as c:
        off = data(
            await c.call_tool(
                "set_flag_enabled", {"flag_key": "product_sort", "environment": "production", "enabled": False}
            )
        )
        again = data(
            await c.call_tool(
                "set_flag_enabled", {"flag_key": "product_sort", "environment": "production", "enabled": False}
            )
        )
    assert (
        off["status"] == "written" and "stops serving: a/b rule 'experiment' (100% of its audience)" in off["effects"]
    )
    assert again["status"] == "unchanged"
    assert writes(sandbox) == [
        f"POST /flags/v1/projects/{PID}/flags/product_sort/environments/production/ruleset/disabled"
    ]


async def test_production_only_mode_confirms_production_alone(sandbox: Sandbox) -> None:
    async with Client(make(sandbox, confirm="production-only")) as c:
        development = data(
            await c.call_tool(
                "set_flag_enabled", {"flag_key": "homepage_hero", "environment": "development", "enabled": True}
            )
        )
        production = data(
            await c.call_tool(
                "set_flag_enabled", {"flag_key": "homepage_hero", "environment": "production", "enabled": True}
            )
        )
    assert development["status"] == "written" and production["status"] == "preview"
    assert len(writes(sandbox)) == 1


async def test_token_mode_never_elicits(sandbox: Sandbox) -> None:
    user = User()
    async with Client(make(sandbox, confirm="token"), elicitation_callback=user) as c:
        preview = data(await c.call_tool("archive_flags", {"flag_keys": ["homepage_hero"]}))
    assert preview["status"] == "preview" and user.shown == [] and writes(sandbox) == []


# ------------------------------------------------------------------------------------------------------------------
# Audit
# ------------------------------------------------------------------------------------------------------------------


async def test_every_write_and_refusal_is_audited_without_secrets(sandbox: Sandbox, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    async with Client(make(sandbox, audit_log=str(log))) as c:
        token = data(await c.call_tool("patch_flag", DESCRIBE))["confirmation_token"]
        await c.call_tool("patch_flag", {**DESCRIBE, "confirmation_token": token})
        await c.call_tool("archive_flags", {"flag_keys": ["homepage_hero"], "confirmation_token": token})
    async with Client(make(sandbox, audit_log=str(log)), elicitation_callback=User("decline")) as c:
        await c.call_tool("archive_flags", {"flag_keys": ["homepage_hero"]})
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["outcome"] for r in records] == ["written", "refused", "declined"]
    assert records[0]["revision_before"] == {"product_sort": 3} and records[0]["revision_after"] == {"product_sort": 4}
    assert all({"time", "tool", "arguments"} <= set(r) for r in records)
    assert token not in log.read_text()


def test_the_patch_whitelist_is_the_specs_writable_flag_fields() -> None:
    from opt_mcp.tools.writes import _NOT_WRITABLE, VARIABLE_FIELDS, WRITABLE_FIELDS
    from tests.conftest import DATA

    schemas = json.loads((DATA / "specs" / "flags-v1.openapi.json").read_text())["components"]["schemas"]
    writable = {name for name, prop in schemas["Flag"]["properties"].items() if not prop.get("readOnly")}
    # Each spec-writable field that a patch refuses has its reason in _NOT_WRITABLE (key, archived, the ids).
    assert writable - set(_NOT_WRITABLE) == WRITABLE_FIELDS
    assert writable & set(_NOT_WRITABLE) == {"key", "archived", "project_id", "account_id"}
    variable = {n for n, p in schemas["VariableDefinition"]["properties"].items() if not p.get("readOnly")}
    assert variable == VARIABLE_FIELDS


async def test_a_new_variable_without_description_is_written_without_false_warnings(sandbox: Sandbox) -> None:
    """Found by the property test: Optimizely gives a new variable description "", which the check must expect."""
    new_var = {"key": "new_var", "type": "string", "default_value": "x"}
    operations = [{"op": "add", "path": "/variable_definitions/new_var", "value": new_var}]
    async with Client(make(sandbox), elicitation_callback=User()) as c:
        done = data(await c.call_tool("patch_flag", {"flag_key": "product_sort", "operations": operations}))
    assert done["status"] == "written" and "warnings" not in done


async def test_an_answer_that_differs_from_the_request_is_reported_with_the_after_state(sandbox: Sandbox) -> None:
    """The API ignores what it does not apply; simulate a write that comes back different."""
    original = sandbox.endpoints.patch_flags

    async def drops_the_change(request: Any) -> Any:
        request._body = json.dumps([{"op": "replace", "path": "/product_sort/name", "value": "Other"}]).encode()
        return await original(request)

    sandbox.endpoints.patch_flags = drops_the_change  # type: ignore[method-assign]
    sandbox.app.router.routes.clear()
    sandbox.app.router.routes.extend(sandbox._routes())
    async with Client(make(sandbox), elicitation_callback=User()) as c:
        done = data(await c.call_tool("patch_flag", DESCRIBE))
    assert done["status"] == "written"
    warning = " ".join(done["warnings"])
    assert "/description is '', not 'Sorted'" in warning and "/name is 'Other', not 'Product sort'" in warning


# ------------------------------------------------------------------------------------------------------------------
# Progress and cancellation
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_bulk_archive_reports_progress_per_chunk(mode: str) -> None:
    sandbox = Sandbox(SandboxConfig(flags=130, rate_limits=SandboxLimits.unlimited()))
    keys = [k for k, f in sandbox.store.projects[PID].flags.items() if not f.fields["archived"]][:120]
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(make(sandbox), mode=mode) as c:
        token = data(await c.call_tool("archive_flags", {"flag_keys": keys}))["confirmation_token"]
        await c.call_tool("archive_flags", {"flag_keys": keys, "confirmation_token": token}, progress_callback=progress)
    # The preview's look, the fresh look before the write, then the write: one rising count across the three.
    looks = ["looked up 50", "looked up 100", "looked up 120"]
    steps = [*looks, *looks, "archived 50", "archived 100", "archived 120"]
    assert [message for _, _, message in seen] == [f"{step} of 120 flags" for step in steps]
    assert [done for done, _, _ in seen] == [50, 100, 120, 170, 220, 240, 290, 340, 360]


async def test_a_cancelled_bulk_archive_stops_between_chunks_and_audits_what_it_wrote(tmp_path: Path) -> None:
    """The client cancels while the second chunk is on its way (the sandbox is slow to answer): that chunk is seen
    through, the third is never sent, and the audit names exactly the flags archived."""
    sandbox = Sandbox(SandboxConfig(flags=130, rate_limits=SandboxLimits.unlimited()))
    flags = sandbox.store.projects[PID].flags
    keys = [k for k, f in flags.items() if not f.fields["archived"]][:120]
    audit = tmp_path / "audit.jsonl"
    server = make(sandbox, audit_log=str(audit))
    async with Client(server) as c:
        token = data(await c.call_tool("archive_flags", {"flag_keys": keys}))["confirmation_token"]
        sandbox.inject("latency", "/flags/archived", method="POST", delay=0.3, times=None)
        async with anyio.create_task_group() as background:
            with anyio.CancelScope() as scope:

                async def cancel_soon() -> None:
                    await anyio.sleep(0.15)  # the second chunk is on its way by now (each takes 0.3 s)
                    scope.cancel()

                async def progress(progress: float, total: float | None, message: str | None) -> None:
                    if message == "archived 50 of 120 flags":
                        background.start_soon(cancel_soon)

                await c.call_tool(
                    "archive_flags", {"flag_keys": keys, "confirmation_token": token}, progress_callback=progress
                )
        assert scope.cancelled_caught
        await anyio.sleep(0.8)  # the chunk in flight finishes on the server
        after = data(await c.call_tool("list_flags", {"archived": True, "limit": 100}))  # the server is still up
    assert writes(sandbox) == [f"POST /flags/v1/projects/{PID}/flags/archived"] * 2
    archived = {k for k in keys if flags[k].fields["archived"]}
    assert len(archived) == 100 and after["total_count"] >= 100
    (record,) = [json.loads(line) for line in audit.read_text().splitlines()]
    assert record["outcome"] == "cancelled" and set(record["revision_after"]) == archived


# ------------------------------------------------------------------------------------------------------------------
# The audit record of writes that fail or are refused late
# ------------------------------------------------------------------------------------------------------------------


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_a_failed_write_is_audited_with_optimizelys_status_and_uuid(sandbox: Sandbox, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    sandbox.faults.add(Fault("status", path="/flags$", method="PATCH", status=409))
    async with Client(make(sandbox, audit_log=str(audit)), elicitation_callback=User()) as c:
        result = await c.call_tool("patch_flag", DESCRIBE)
    record = _audit(audit)[-1]
    assert result.is_error
    assert record["outcome"] == "failed"
    assert record["status"] == 409
    assert record["uuid"] and record["uuid"] in text(result)


async def test_a_cancel_while_a_failed_write_is_read_again_still_leaves_its_record(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"

    async def arm(_: int) -> None:
        # The change is made and its answer lost; the read after it is slow, and the client gives up meanwhile.
        sandbox.faults.add(Fault("status", path="/flags$", method="PATCH", status=502, after=True))
        sandbox.faults.add(Fault("latency", path="/flags/product_sort$", method="GET", delay=0.0, times=2))
        sandbox.faults.add(Fault("latency", path="/flags/product_sort$", method="GET", delay=1.0, times=None))

    async with Client(make(sandbox, audit_log=str(audit)), elicitation_callback=User(before_answer=arm)) as c:
        with anyio.move_on_after(0.6):
            await c.call_tool("patch_flag", DESCRIBE)
        with anyio.fail_after(10):
            while not _audit(audit):  # noqa: ASYNC110 - the audit file has no event to wait on
                await anyio.sleep(0.05)
    assert sandbox.store.projects[PID].flags["product_sort"].fields["description"] == "Sorted"
    record = _audit(audit)[-1]
    assert record["outcome"] == "failed"
    assert "most likely applied" in record["recheck"]


async def test_a_refusal_found_just_before_writing_is_audited(sandbox: Sandbox, tmp_path: Path) -> None:
    """The handshake era carries the approved preview to the write, whose last read finds the flag archived. (Under
    the 2026 protocol the call is resolved again after the answer: the new preview refuses before the guard runs.)"""
    audit = tmp_path / "audit.jsonl"

    async def archive_meanwhile(_: int) -> None:
        sandbox.store.projects[PID].flags["product_sort"].fields["archived"] = True

    server = make(sandbox, audit_log=str(audit))
    async with Client(server, mode="legacy", elicitation_callback=User(before_answer=archive_meanwhile)) as c:
        result = await c.call_tool("patch_flag", DESCRIBE)
    assert result.is_error and "archived" in text(result)
    assert writes(sandbox) == []
    assert [r["outcome"] for r in _audit(audit)] == ["refused"]


async def test_a_bulk_write_that_wrote_nothing_is_an_error_audited_as_failed(sandbox: Sandbox, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    sandbox.faults.add(Fault("status", path="/flags/archived$", method="POST", status=403, times=None))
    async with Client(make(sandbox, audit_log=str(audit)), elicitation_callback=User()) as c:
        result = await c.call_tool("archive_flags", {"flag_keys": ["product_sort", "homepage_hero"]})
    assert result.is_error
    assert "no flag is known to be archived (a fresh read shows every flag unchanged)" in text(result)
    assert not sandbox.store.projects[PID].flags["product_sort"].fields["archived"]
    assert [r["outcome"] for r in _audit(audit)] == ["failed"]
    assert _audit(audit)[-1]["status"] == 403
