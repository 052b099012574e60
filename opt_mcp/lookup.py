"""Finding one flag, and one environment of it, by the keys a caller gave. When there is none, the one error
``NotFound`` says so in the same words on every surface, which maps it to its own kind of error: a tool to a tool
error (``runtime.api_errors``), a resource to not-found, a prompt to invalid params."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from opt_mcp.api.errors import OptimizelyError
from opt_mcp.api.models import Flag, FlagEnvironment
from opt_mcp.api.query import MAX_PER_PAGE, FlagFilters

if TYPE_CHECKING:
    from opt_mcp.api.client import OptimizelyClient  # HTTP is imported on first use, not at start-up


class NotFound(Exception):
    """Nothing has the key given for ``field``. Its text names the field first, as a tool error does, then says
    where to find what exists."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")


async def flag(client: OptimizelyClient, project_id: int, key: str) -> Flag:
    """The flag ``key`` of the project. Optimizely's 404 is ``NotFound``, with the existing keys closest to
    ``key`` (a key is as easily mistyped in a prompt or a resource URI as in a tool call); any other failure is
    Optimizely's own error."""
    try:
        return await client.get_flag(project_id, key)
    except OptimizelyError as exc:
        if exc.status != 404:
            raise
    suggestions = await _closest_keys(client, project_id, key)
    hint = f". Did you mean: {', '.join(suggestions)}?" if suggestions else ""
    raise NotFound("flag_key", f"no flag {key!r} in project {project_id}; list_flags shows the keys{hint}")


def environment_of(flag: Flag, key: str) -> FlagEnvironment:
    """The flag's state in environment ``key``; ``NotFound`` names the environments it has."""
    env = flag.environments.get(key)
    if env is None:
        known = ", ".join(sorted(flag.environments)) or "none"
        raise NotFound("environment", f"flag {flag.key!r} has no environment {key!r}; it has: {known}")
    return env


async def _closest_keys(client: OptimizelyClient, project_id: int, key: str) -> list[str]:
    """Existing keys close to a mistyped one, from at most two searches (never a walk of every flag)."""
    parts = sorted((p for p in re.split(r"[-_]", key) if len(p) >= 3), key=len, reverse=True)
    candidates: set[str] = set()
    for term in [*parts[:1], key[:3]]:
        try:
            page = await client.list_flags_page(project_id, FlagFilters(query=term), per_page=MAX_PER_PAGE)
        except OptimizelyError:
            continue
        candidates.update(item.key for item in page.items)
    import difflib  # for a mistyped key only: spared at start-up

    return difflib.get_close_matches(key, sorted(candidates), n=5, cutoff=0.5)
