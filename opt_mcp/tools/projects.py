"""Discovery tools: list_projects and list_environments, so a model finds ids instead of guessing them."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context

from opt_mcp.runtime import api_errors, runtime
from opt_mcp.tools.flags import ProjectId
from opt_mcp.views import EnvironmentList, EnvironmentView, ProjectList, ProjectView


async def list_projects(ctx: Context[Any, Any]) -> ProjectList:
    """List the Optimizely projects this token can see, with their ids, and which one is the default.

    Flag tools work on projects where flags_enabled is true.
    """
    rt = runtime(ctx)
    with api_errors():
        projects = await rt.client.list_projects()
    default = rt.settings.default_project_id
    return ProjectList(
        projects=[ProjectView.of(p) for p in projects],
        default_project_id=str(default) if default is not None else None,
    )


async def list_environments(ctx: Context[Any, Any], project_id: ProjectId = None) -> EnvironmentList:
    """List a project's environments (keys such as production, development) in priority order; 1 is production."""
    rt = runtime(ctx)
    pid = rt.project(project_id)
    with api_errors():
        environments = await rt.client.list_environments(pid)
    return EnvironmentList(
        project_id=str(pid),
        environments=[EnvironmentView.of(e) for e in sorted(environments, key=lambda e: e.priority)],
    )
