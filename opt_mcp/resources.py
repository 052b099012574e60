"""MCP resources: each flag at ``optimizely://projects/{project_id}/flags/{flag_key}``, for clients that let a user
attach a flag to a conversation. The content is get_flag's compact view, fitted to the same budget."""

import re
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from opt_mcp import lookup, render
from opt_mcp.api.errors import OptimizelyError
from opt_mcp.fitting import fit_flag_detail
from opt_mcp.runtime import runtime
from opt_mcp.tools.args import FLAG_KEY_PATTERN
from opt_mcp.views import FlagDetail

FLAG_URI = "optimizely://projects/{project_id}/flags/{flag_key}"
_FLAG_KEY = re.compile(FLAG_KEY_PATTERN)


async def flag_resource(project_id: str, flag_key: str, ctx: Context[Any, Any]) -> str:
    """A feature flag: its variables, and per environment on/off, status and rules (as get_flag shows it)."""
    if not project_id.isdigit() or int(project_id) == 0:
        raise ResourceNotFoundError(f"project_id must be a project's numeric id, not {project_id!r}")
    if not _FLAG_KEY.match(flag_key):
        raise ResourceNotFoundError("flag_key may hold only letters, digits, '-' and '_' (at most 64)")
    rt = runtime(ctx)
    pid = int(project_id)
    try:
        flag = await lookup.flag(rt.client, pid, flag_key)
    except lookup.NotFound as exc:
        raise ResourceNotFoundError(str(exc)) from None
    except OptimizelyError as exc:
        raise ResourceError(f"Optimizely refused or failed the request. {exc}") from None
    fitted = fit_flag_detail(FlagDetail.of(pid, flag, None), rt.settings.max_tokens)
    return render.flag_detail(fitted.view)
