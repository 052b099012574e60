"""Flag tools: list_flags and get_flag (the read side)."""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from opt_mcp.api.client import MAX_PER_PAGE, FlagFilters, OptimizelyClient
from opt_mcp.api.errors import OptimizelyError
from opt_mcp.cursor import Cursor, CursorError, fingerprint
from opt_mcp.runtime import api_errors, runtime
from opt_mcp.views import FlagDetail, FlagList, FlagSummary

# Optimizely's rule for flag keys: letters, digits, '-' and '_', at most 64 characters.
FLAG_KEY_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ENVIRONMENT_KEY_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

ProjectId = Annotated[
    int | None,
    Field(description="Optimizely project id; omit to use the default project. Pass large ids as strings."),
]
RuleType = Literal["a/b", "multi_armed_bandit", "targeted_delivery"]
Sort = Literal[
    "key:asc",
    "key:desc",
    "name:asc",
    "name:desc",
    "created_time:desc",
    "created_time:asc",
    "updated_time:desc",
    "updated_time:asc",
]


async def list_flags(
    ctx: Context[Any, Any],
    project_id: ProjectId = None,
    query: Annotated[
        str | None, Field(max_length=200, description="substring to find in the key, name or description")
    ] = None,
    archived: Annotated[bool, Field(description="true lists only archived flags")] = False,
    environment: Annotated[
        str | None,
        Field(pattern=ENVIRONMENT_KEY_PATTERN, description="environment key that enabled= and rule_type= look at"),
    ] = None,
    enabled: Annotated[bool | None, Field(description="only flags that are on (true) or off (false)")] = None,
    rule_type: Annotated[RuleType | None, Field(description="only flags with a rule of this type")] = None,
    sort: Annotated[Sort | None, Field(description="order of the results")] = None,
    cursor: Annotated[str | None, Field(max_length=4000, description="next_cursor of the previous call")] = None,
    limit: Annotated[int, Field(ge=1, le=MAX_PER_PAGE, description="flags per call")] = 25,
) -> FlagList:
    """List a project's feature flags: per flag its key, name, and per environment on/off, status and rule counts.

    Start here to find a flag, then call get_flag for its rules and variables. Results come in pages: when
    next_cursor is not null, call again with the same filters and cursor=next_cursor for the next flags.
    """
    rt = runtime(ctx)
    pid = rt.project(project_id)
    filters = FlagFilters(
        archived=archived,
        query=query or None,
        environment=[environment] if environment else (),
        enabled=enabled,
        rule_type=[rule_type] if rule_type else (),
        sort=[sort] if sort else (),
    )
    query_id = fingerprint({"filters": filters.params()})
    with api_errors():
        if cursor:
            try:
                position = Cursor.decode(cursor, project_id=pid, query=query_id)
            except CursorError as exc:
                raise ToolError(f"cursor: {exc}") from None
        else:
            position = Cursor(pid, rt.client.flags_link(pid, filters, per_page=limit), 0, query_id)
        page = await rt.client.follow_flags_link(pid, position.link)
    end = position.skip + limit
    items = page.items[position.skip : end]
    if end < len(page.items):
        next_cursor: str | None = Cursor(pid, position.link, end, query_id).encode()
    elif page.next_link is not None:
        next_cursor = Cursor(pid, page.next_link, 0, query_id).encode()
    else:
        next_cursor = None
    return FlagList(
        project_id=str(pid),
        total_count=page.total_count,
        returned=len(items),
        flags=[FlagSummary.of(flag) for flag in items],
        next_cursor=next_cursor,
    )


async def get_flag(
    ctx: Context[Any, Any],
    flag_key: Annotated[str, Field(pattern=FLAG_KEY_PATTERN, description="the flag's key, e.g. product_sort")],
    project_id: ProjectId = None,
    environment: Annotated[
        str | None, Field(pattern=ENVIRONMENT_KEY_PATTERN, description="show only this environment's rules")
    ] = None,
) -> FlagDetail:
    """Show one flag: description, variables, and per environment whether it is on, its status and its rules.

    Each rule shows its type, status, audiences, traffic %, variations, primary metric, days running and, for
    experiments, the experiment_id get_results takes. revision and permissions tell what a change would touch.
    """
    rt = runtime(ctx)
    pid = rt.project(project_id)
    with api_errors():
        try:
            flag = await rt.client.get_flag(pid, flag_key)
        except OptimizelyError as exc:
            if exc.status != 404:
                raise
            suggestions = await _closest_keys(rt.client, pid, flag_key)
            hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else " Call list_flags to see the keys."
            raise ToolError(f"flag_key: no flag {flag_key!r} in project {pid}.{hint}") from None
    if environment is not None and environment not in flag.environments:
        known = ", ".join(sorted(flag.environments)) or "none"
        raise ToolError(f"environment: flag {flag_key!r} has no environment {environment!r}; it has: {known}")
    return FlagDetail.of(pid, flag, environment)


async def _closest_keys(client: OptimizelyClient, project_id: int, key: str) -> list[str]:
    """Existing keys close to a mistyped one, from at most two searches (never a walk of every flag)."""
    parts = sorted((p for p in re.split(r"[-_]", key) if len(p) >= 3), key=len, reverse=True)
    candidates: set[str] = set()
    for term in [*parts[:1], key[:3]]:
        try:
            page = await client.list_flags_page(project_id, FlagFilters(query=term), per_page=MAX_PER_PAGE)
        except OptimizelyError:
            continue
        candidates.update(flag.key for flag in page.items)
    return difflib.get_close_matches(key, sorted(candidates), n=5, cutoff=0.5)
