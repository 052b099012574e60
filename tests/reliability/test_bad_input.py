"""Bad input campaign: over a thousand generated calls a run, random and adversarial arguments for every tool.
Each returns a valid result or an error result that names the problem; none crashes the server, none sends a write
to the API (no call here can hold a valid confirmation token), none leaks a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.types import CallToolResult

from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.config import Settings
from opt_mcp.sandbox import SEED_PROJECT_ID, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.server import build_server
from tests.conftest import FAST_RETRY, Tally
from tests.helpers import text

CALLS = 1100

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),  # any code point: RTL, NUL, emoji, CJK
    st.sampled_from(["x" * 20_000, "\u202e" * 100, "\x00", "null", "{}", "[]", "1e309", "-0"]),
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
flag_keys = st.one_of(
    st.sampled_from(["product_sort", "homepage_hero", "doc-test-flag"]),
    st.sampled_from([
        "product_sort", "homepage_hero", "doc-test-flag", "../../etc/passwd", "..", "%2e%2e", "a/b", "flag?x=1",
        "flag#frag", " product_sort", "product_sort\n", "ÄÖ", "x" * 65, "", "🚀", "product_sort/../homepage_hero",
    ]),
    junk,
)  # fmt: skip
pointers = st.one_of(
    st.sampled_from([
        "", "/", "/name", "/description", "~1", "/~1", "/~0", "/~2", "/..", "/../homepage_hero/name",
        "/homepage_hero/name", "/product_sort/description", "/variable_definitions/~1x/default_value",
        "/variable_definitions/sort_algorithm/default_value", "/environments/production/enabled", "/key", "/id",
        "/archived", "/revision", "/" + "a" * 5000, "/custom_fields/x/y/z", "name", "/team_ids/-", "/team_ids/99",
    ]),
    st.text(max_size=30).map(lambda s: "/" + s),
    junk,
)  # fmt: skip
operations = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus", ""]) | junk},
            optional={"path": pointers, "from": pointers, "value": junk},
        ),
        max_size=5,
    ),
    junk,
)
environments = st.sampled_from(["production", "development", "staging", "../x", "", "PRODUCTION", "prod\u0000"])
projects = st.sampled_from(
    [None] * 6 + [SEED_PROJECT_ID, str(SEED_PROJECT_ID), 9007199254740993, 20110901, 42, 0, -1, True]
)
tokens = st.sampled_from(["", "v1.abc.def", "x" * 3000]) | st.text(max_size=80)
# Plausible values mostly (a call that gets past validation reaches the tool's own checks and the sandbox), each
# parameter drawn from junk one time in eight.
PARAMETERS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "list_projects": {},
    "list_environments": {"project_id": projects},
    "list_flags": {
        "project_id": projects, "query": st.text(max_size=300), "archived": st.booleans(),
        "environment": environments, "enabled": st.none() | st.booleans(),
        "rule_type": st.sampled_from(["a/b", "multi_armed_bandit", "targeted_delivery", "rollout", ""]),
        "sort": st.sampled_from(["key:asc", "name:asc", "updated_time:desc", "key:desc", ""]),
        "detail": st.sampled_from(["summary", "standard", "full", "none"]),
        "cursor": tokens, "limit": st.integers(-5, 500),
    },
    "get_flag": {"flag_key": flag_keys, "project_id": projects, "environment": environments},
    "get_results": {
        "flag_key": flag_keys, "environment": environments, "rule_key": st.text(max_size=120),
        "experiment_id": st.integers(-1, 2**64), "start_time": st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01",
        "yesterday", "9999-12-31T23:59:59+14:00"]), "end_time": st.datetimes().map(str),
        "baseline_variation_id": st.text(max_size=50), "metrics": st.lists(st.text(max_size=30), max_size=25),
        "project_id": projects,
    },
    "patch_flag": {
        "flag_key": flag_keys, "operations": operations, "project_id": projects, "confirmation_token": tokens},
    "archive_flags": {
        "flag_keys": st.lists(flag_keys, max_size=4), "project_id": projects, "confirmation_token": tokens},
    "unarchive_flags": {
        "flag_keys": st.lists(flag_keys, max_size=4), "project_id": projects, "confirmation_token": tokens},
    "set_flag_enabled": {
        "flag_key": flag_keys, "environment": environments, "enabled": st.booleans(), "project_id": projects,
        "confirmation_token": tokens,
    },
}  # fmt: skip


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    tool = draw(st.sampled_from(sorted(PARAMETERS)))
    arguments = {}
    for name, plausible in PARAMETERS[tool].items():
        if draw(st.integers(0, 5 if name != "confirmation_token" else 1)):  # five times in six (a token: half)
            arguments[name] = draw(plausible if draw(st.integers(0, 7)) else junk)
    if not draw(st.integers(0, 4)):
        arguments[draw(st.sampled_from(["unknown", "__proto__", "confirmation_token", "project_id"]))] = draw(junk)
    return tool, arguments


class Served:
    def __init__(self, portal: BlockingPortal, client: Client, sandbox: Sandbox) -> None:
        self.portal, self.client, self.sandbox = portal, client, sandbox


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    sandbox = Sandbox(SandboxConfig(flags=20, rate_limits=SandboxLimits.unlimited()))
    server = build_server(
        Settings(confirm="token"), sandbox=sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY
    )
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(Client(server)) as client:
        yield Served(portal, client, sandbox)


@pytest.mark.slow
@settings(max_examples=CALLS, deadline=None, suppress_health_check=list(HealthCheck))
@given(call=calls())
def test_every_call_ends_in_a_result_or_a_named_error(
    served: Served, tally: Tally, call: tuple[str, dict[str, Any]]
) -> None:
    tool, arguments = call
    result = served.portal.call(served.client.call_tool, tool, arguments)
    tally.add(calls=1)
    # Shown by --hypothesis-show-statistics: how far calls get (an error's first words say where it stopped).
    event(f"{tool}: {' '.join(text(result).split()[4:8]) if result.is_error else 'result'}")
    assert isinstance(result, CallToolResult)
    message = text(result)
    if result.is_error:
        assert message.strip() and "Traceback" not in message and 'File "' not in message, message
        assert len(message) < 6000, f"an error of {len(message)} characters: it echoes its input"
        named = [name for name in [*arguments, *PARAMETERS[tool]] if name in message]
        assert named or "Optimizely" in message, f"{tool} {json.dumps(arguments, default=str)[:300]}: {message}"
    else:
        assert result.structured_content is not None
        assert result.structured_content.get("status") != "written"
    written = [r for r in served.sandbox.requests() if r.method != "GET"]
    assert written == [], f"{tool} sent a write: {written}"
