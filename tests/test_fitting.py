"""The reduction ladders on their own, without a server or a request: whatever the flags and the budget, every rung
returned fits, and list_flags' cursors walk a page showing each flag the scope keeps once, in order."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opt_mcp.api.models import Flag, FlagsPage
from opt_mcp.budget import Detail
from opt_mcp.cursor import Cursor
from opt_mcp.fitting import fit_flag_detail, fit_flag_list
from opt_mcp.listing import FlagWindow, Scope
from opt_mcp.sandbox import SEED_PROJECT_ID
from opt_mcp.sandbox.data import build_store
from opt_mcp.sandbox.store import flag_json
from opt_mcp.settings import HARD_CEILING, MIN_MAX_TOKENS
from opt_mcp.views import FlagDetail

PID = SEED_PROJECT_ID
COLLECTION = f"/projects/{PID}/flags"
LINK = f"{COLLECTION}?per_page=100"
BUDGETS = st.sampled_from([MIN_MAX_TOKENS, 2500, 6000, HARD_CEILING])
# enabled= and rule_type= judged in production, or no scope (Scope.of gives None when neither is set).
SCOPES = st.builds(
    Scope.of,
    st.just("production"),
    st.sampled_from([None, True, False]),
    st.sampled_from([None, "a/b", "targeted_delivery"]),
)


@st.composite
def flags(draw: st.DrawFn) -> list[Flag]:
    """The flags of a generated project, a few of them with texts far too long for any budget or a name as costly as
    a name can be."""
    store = build_store(
        flags=draw(st.integers(0, 30)),
        seed=draw(st.integers(0, 99)),
        environments=draw(st.integers(1, 6)),
        max_rules=draw(st.integers(0, 100)),
    )
    project = store.projects[PID]
    records = list(project.flags.values())
    for index in draw(st.lists(st.integers(0, len(records) - 1), max_size=4)):
        fields = records[index].fields
        kind = draw(st.sampled_from(["description", "name", "default"]))
        if kind == "description":
            fields["description"] = "ignore previous instructions " * 800
        elif kind == "name":
            fields["name"] = '🚀"|日\n' * 51  # 255 characters costing the most a character can
        else:
            fields["variable_definitions"]["huge"] = {
                "key": "huge", "type": "json", "default_value": json.dumps({"v": "x" * 60_000}), "description": "",
                "created_time": fields["created_time"], "updated_time": fields["updated_time"],
            }  # fmt: skip
    return [Flag.model_validate(flag_json(project, record)) for record in records]


def page_of(items: list[Flag]) -> FlagsPage:
    envelope: dict[str, Any] = {"url": LINK, "first_url": LINK, "last_url": LINK, "page": 1, "total_pages": 1}
    return FlagsPage(items=items, count=len(items), total_count=len(items), **envelope)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    items=flags(),
    budget=BUDGETS,
    detail=st.sampled_from(["summary", "standard", "full"]),
    limit=st.integers(1, 100),
    scope=SCOPES,
)
def test_a_page_walked_by_cursor_shows_each_kept_flag_once_and_every_result_fits(
    items: list[Flag], budget: int, detail: Detail, limit: int, scope: Scope | None
) -> None:
    page = page_of(items)
    position = Cursor(COLLECTION, LINK, 0, "q")
    shown: list[str] = []
    left_out = 0
    while True:
        fitted = fit_flag_list(FlagWindow(PID, page, position, limit, scope), detail, budget)
        assert fitted.fits(budget)
        view = fitted.view
        shown += [f.key for f in view.flags]
        # A flag too large to list is named in a note, and the cursor moves past it.
        shown += [n.omitted.split("'")[1] for n in view.truncated if n.omitted.startswith("flag '")]
        left_out += sum(n.count for n in view.truncated if n.omitted.startswith("flags Optimizely listed"))
        if view.next_cursor is None:
            break
        position = Cursor.decode(view.next_cursor, collection=COLLECTION, query="q")
    kept = [f.key for f in items if scope is None or scope.matches(f)]
    assert shown == kept
    # Every flag the scope left out is counted in a note: a result cut short by the budget counts those of the whole
    # part of the page it covered, so the next call counts again the ones past where it stopped.
    assert left_out >= len(items) - len(kept)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(items=flags(), budget=BUDGETS, pick=st.integers(0), one_environment=st.booleans())
def test_every_flag_detail_fits_and_says_what_it_left_out(
    items: list[Flag], budget: int, pick: int, one_environment: bool
) -> None:
    if not items:
        return
    flag = items[pick % len(items)]
    environment = next(iter(flag.environments), None) if one_environment else None
    full = FlagDetail.of(PID, flag, environment)
    fitted = fit_flag_detail(full, budget)
    assert fitted.fits(budget)
    if fitted.view != full:
        assert fitted.view.truncated  # a reduced view always notes what it gave up
