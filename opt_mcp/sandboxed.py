"""The API client and the sandbox brought together: a client wired to a sandbox in process, and client-side pacing
to the limits a sandbox enforces.

Here, above both, because neither knows the other: the client speaks HTTP through whatever transport it is given,
and the sandbox answers whatever reaches it, to limits it states itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opt_mcp.api.client import OptimizelyClient, RetryPolicy, TokenAuth
from opt_mcp.api.oauth import OAuthCredentials
from opt_mcp.api.ratelimit import RateLimits, Window
from opt_mcp.sandbox.config import SANDBOX_ORIGIN, SANDBOX_TOKEN, SANDBOX_TOKEN_URL
from opt_mcp.sandbox.limits import Limit, SandboxLimits

if TYPE_CHECKING:
    from opt_mcp.sandbox.app import Sandbox


def pacing_for(limits: SandboxLimits) -> RateLimits:
    """Client-side pacing to exactly the limits a sandbox enforces, as the client paces to Optimizely's."""

    def windows(enforced: tuple[Limit, ...]) -> tuple[Window, ...]:
        return tuple(Window(limit.requests, limit.seconds) for limit in enforced)

    return RateLimits(flags=windows(limits.flags), v2=windows(limits.v2), results=windows(limits.results))


def sandbox_client(
    sandbox: Sandbox,
    token: str | TokenAuth | None = SANDBOX_TOKEN,
    *,
    oauth: OAuthCredentials | None = None,
    rate_limits: RateLimits | None = None,
    retry: RetryPolicy | None = None,
    **kwargs: Any,
) -> OptimizelyClient:
    """An OptimizelyClient wired to ``sandbox`` in process (the other arguments are the client's); ``oauth``
    refreshes at the sandbox's token endpoint whatever its ``token_url`` says (a ``TokenAuth`` given instead must
    have been made with SANDBOX_TOKEN_URL)."""
    return OptimizelyClient(
        token,
        oauth=replace(oauth, token_url=SANDBOX_TOKEN_URL) if oauth is not None else None,
        base_url=SANDBOX_ORIGIN,
        transport=sandbox.transport(),
        rate_limits=rate_limits,
        retry=retry,
        **kwargs,
    )
