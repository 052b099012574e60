"""Progress notifications for long calls. The protocol wants one rising number per request, while a call can walk
flags more than once (the preview's look, then the fresh look before a write, then the write): so the number is
the count of items handled so far in this call, across its steps, and each step's own count is in the message."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from mcp.server.mcpserver import Context

# The count and the request it belongs to: a request's task may start from a context an earlier request left its
# count in, and a new request id starts the count again.
_handled: ContextVar[tuple[Any, int] | None] = ContextVar("opt_mcp_progress", default=None)


async def advance(ctx: Context[Any, Any], items: int, message: str) -> None:
    """Report ``items`` more handled (a no-op unless the client asked for progress)."""
    request, handled = _handled.get() or (None, 0)
    if request != ctx.request_id:
        handled = 0
    handled += items
    _handled.set((ctx.request_id, handled))
    await ctx.report_progress(handled, None, message)
