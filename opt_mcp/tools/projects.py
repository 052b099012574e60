"""Discovery tools: list_projects and list_environments, so a model finds ids instead of guessing them."""

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import Context
from mcp.types import CallToolResult
from pydantic import BaseModel

from opt_mcp import render
from opt_mcp.budget import Fitted, largest_fitting
from opt_mcp.runtime import api_errors, runtime
from opt_mcp.tools.args import ProjectId
from opt_mcp.views import EnvironmentList, EnvironmentView, ProjectList, ProjectView, Truncation

T = TypeVar("T")
V = TypeVar("V", bound=BaseModel)


async def list_projects(ctx: Context[Any, Any]) -> Annotated[CallToolResult, ProjectList]:
    """List the Optimizely projects this token can see, with their ids, and which one is the default.

    Flag tools work on projects where flags_enabled is true.
    """
    rt = runtime(ctx)
    with api_errors():
        projects = await rt.client.list_projects()
    default = rt.settings.default_project_id
    views = [ProjectView.of(p) for p in projects]

    def build(shown: Sequence[ProjectView]) -> Fitted[ProjectList]:
        notes = [] if len(shown) == len(views) else [_more("projects", len(views) - len(shown))]
        view = ProjectList(
            projects=list(shown), default_project_id=str(default) if default is not None else None, truncated=notes
        )
        return Fitted(view, render.project_list(view))

    return _fit(views, build, rt.settings.max_tokens)


async def list_environments(
    ctx: Context[Any, Any], project_id: ProjectId = None
) -> Annotated[CallToolResult, EnvironmentList]:
    """List a project's environments (keys such as production, development) in priority order; 1 is production."""
    rt = runtime(ctx)
    pid = rt.project(project_id)
    with api_errors():
        environments = await rt.client.list_environments(pid)
    views = [EnvironmentView.of(e) for e in sorted(environments, key=lambda e: e.priority)]

    def build(shown: Sequence[EnvironmentView]) -> Fitted[EnvironmentList]:
        notes = [] if len(shown) == len(views) else [_more("environments", len(views) - len(shown))]
        view = EnvironmentList(project_id=str(pid), environments=list(shown), truncated=notes)
        return Fitted(view, render.environment_list(view))

    return _fit(views, build, rt.settings.max_tokens)


def _more(what: str, count: int) -> Truncation:
    return Truncation(omitted=what, count=count, get_it="raise OPT_MCP_MAX_TOKENS, or the Optimizely app")


def _fit(items: Sequence[T], build: Callable[[Sequence[T]], Fitted[V]], budget: int) -> CallToolResult:
    """All items if they fit, else the longest prefix that does (with a note of how many were left out)."""
    whole = build(items)
    if whole.fits(budget):
        return whole.response()
    best = largest_fitting(items, build, lambda r: r.fits(budget))
    return (best[0] if best else build(items[:0])).response()
