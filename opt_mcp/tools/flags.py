"""Flag tools: list_flags and get_flag (the read side)."""

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import Field

from opt_mcp import lookup
from opt_mcp.api.query import MAX_PER_PAGE, FlagFilters
from opt_mcp.budget import Detail
from opt_mcp.cursor import Cursor, CursorError, fingerprint
from opt_mcp.fitting import fit_flag_detail, fit_flag_list
from opt_mcp.listing import FlagWindow, Scope
from opt_mcp.runtime import Runtime, api_errors, runtime
from opt_mcp.tools.args import EnvironmentKey, FlagKey, ProjectId, RuleType
from opt_mcp.views import FlagDetail, FlagList

Sort = Literal["key:asc", "name:asc", "updated_time:desc", "created_time:desc"]


DetailArg = Annotated[
    Detail,
    Field(
        description="summary: on/off per environment; standard: + status, rule counts; full: + description, rules",
    ),
]


async def list_flags(
    ctx: Context[Any, Any],
    project_id: ProjectId = None,
    query: Annotated[
        str | None,
        Field(max_length=200, description="substring to find in the key, name or description"),
    ] = None,
    archived: Annotated[bool, Field(description="true lists only archived flags")] = False,
    environment: Annotated[
        EnvironmentKey | None, Field(description="with enabled= or rule_type=: judged in this environment")
    ] = None,
    enabled: Annotated[bool | None, Field(description="only flags that are on (true) or off (false)")] = None,
    rule_type: Annotated[RuleType | None, Field(description="only flags with a rule of this type")] = None,
    sort: Annotated[Sort | None, Field(description="order of the results")] = None,
    detail: DetailArg = "standard",
    cursor: Annotated[str | None, Field(max_length=4000, description="next_cursor of the previous call")] = None,
    limit: Annotated[int, Field(ge=1, le=MAX_PER_PAGE, description="flags per call")] = 25,
) -> Annotated[CallToolResult, FlagList]:
    """Find feature flags: per flag, per environment on/off, status and rule counts. Then get_flag for one.
    When next_cursor is not null, call again with the same filters and cursor=next_cursor."""
    rt = runtime(ctx)
    pid = rt.project(project_id)
    # Whether Optimizely judges enabled= and rule_type= in the environment= named or in any environment is not
    # documented. So each flag is checked here against its own state in that environment, and enabled=false is
    # not sent with an environment: judged in any environment, it would leave out flags on elsewhere.
    scope = Scope.of(environment, enabled, rule_type)
    filters = FlagFilters(
        archived=archived,
        query=query or None,
        environment=[environment] if environment else (),
        enabled=None if scope and enabled is False else enabled,
        rule_type=[rule_type] if rule_type else (),
        sort=[sort] if sort else (),
    )
    with api_errors():
        position = _position(rt, pid, filters, cursor, limit)
        page = await rt.flags_page(pid, position.link, resuming=position.skip > 0)
    return fit_flag_list(FlagWindow(pid, page, position, limit, scope), detail, rt.settings.max_tokens).response()


def _position(rt: Runtime, pid: int, filters: FlagFilters, cursor: str | None, limit: int) -> Cursor:
    """Where the call starts: the cursor it was given (which must be of the same project and filters), else the
    first page."""
    query_id = fingerprint({"project": pid, "filters": filters.params()})
    collection = f"/projects/{pid}/flags"
    if cursor:
        try:
            return Cursor.decode(cursor, collection=collection, query=query_id)
        except CursorError as exc:
            raise ToolError(f"cursor: {exc}") from None
    return Cursor(collection, rt.client.flags_link(pid, filters, per_page=limit), 0, query_id)


async def get_flag(
    ctx: Context[Any, Any],
    flag_key: Annotated[FlagKey, Field(description="the flag's key, e.g. product_sort")],
    project_id: ProjectId = None,
    environment: Annotated[EnvironmentKey | None, Field(description="show only this environment's rules")] = None,
) -> Annotated[CallToolResult, FlagDetail]:
    """One flag: variables, and per environment on/off, status and rules (audiences, traffic, variations,
    metric, days running, experiment_id for get_results), its revision and what you may change."""
    rt = runtime(ctx)
    pid = rt.project(project_id)
    with api_errors():
        flag = await lookup.flag(rt.client, pid, flag_key)
        if environment is not None:
            lookup.environment_of(flag, environment)
    return fit_flag_detail(FlagDetail.of(pid, flag, environment), rt.settings.max_tokens).response()
