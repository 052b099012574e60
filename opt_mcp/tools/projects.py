"""Discovery tools: list_projects and list_environments, so a model finds ids instead of guessing them."""

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.types import CallToolResult

from opt_mcp.fitting import fit_environments, fit_projects
from opt_mcp.runtime import api_errors, runtime
from opt_mcp.tools.args import ProjectId
from opt_mcp.views import EnvironmentList, EnvironmentView, ProjectList, ProjectView


async def list_projects(ctx: Context[Any, Any]) -> Annotated[CallToolResult, ProjectList]:
    """List the Optimizely projects this token can see, with their ids, and which one is the default.

    Flag tools work on projects where flags_enabled is true.
    """
    rt = runtime(ctx)
    with api_errors():
        projects = await rt.client.list_projects()
    views = [ProjectView.of(p) for p in projects]
    return fit_projects(views, rt.settings.default_project_id, rt.settings.max_tokens).response()


async def list_environments(
    ctx: Context[Any, Any], project_id: ProjectId = None
) -> Annotated[CallToolResult, EnvironmentList]:
    """List a project's environments (keys such as production, development) in priority order; 1 is production."""
    rt = runtime(ctx)
    pid = rt.project(project_id)
    with api_errors():
        environments = await rt.client.list_environments(pid)
    views = [EnvironmentView.of(e) for e in sorted(environments, key=lambda e: e.priority)]
    return fit_environments(pid, views, rt.settings.max_tokens).response()
