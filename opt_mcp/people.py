"""Hosted mode: who is calling, and the Runtime each person's calls run with.

A person is the identity the server authenticated (a name from the operator's token file, or the OAuth subject).
Each (person, Optimizely token) pair gets a Runtime of its own: its own Optimizely client and rate-limit pacing, its
own page memory and results cache, and a guard whose confirmation tokens only that person can redeem. Nothing in one
person's Runtime is reachable from another's calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from opt_mcp.config import Settings
from opt_mcp.guard import Audit, Guard, Ledger, TokenSigner, person_secret
from opt_mcp.runtime import Runtime, Runtimes
from opt_mcp.shared import Store

if TYPE_CHECKING:
    from opt_mcp.api.client import OptimizelyClient

OPTIMIZELY_TOKEN_HEADER = "x-optimizely-token"  # noqa: S105 - a header name
ANONYMOUS = "anonymous"  # the one person of a server started with --no-auth
MAX_RUNTIMES = 1000
TOKENS_PER_PERSON = 4  # a person switching tokens keeps a few clients, not one per header value ever sent
_TOKEN_SHAPE = re.compile(r"^[\x21-\x7e]{8,2048}$")  # printable ASCII, no spaces: what an API token looks like


def person_in(scope: Mapping[str, Any]) -> str | None:
    """The person an HTTP request was authenticated as (the SDK's bearer middleware puts them in the scope)."""
    user = scope.get("user")
    return (user.access_token.subject or user.access_token.client_id) if isinstance(user, AuthenticatedUser) else None


def caller(ctx: Context[Any, Any]) -> tuple[str, str | None]:
    """The authenticated person making this request, and the Optimizely token their client sent, if any."""
    request = ctx.request_context.request
    person = person_in(getattr(request, "scope", None) or {}) or ANONYMOUS
    headers = getattr(request, "headers", None)
    sent = headers.get(OPTIMIZELY_TOKEN_HEADER) if headers is not None else None
    return person, sent.strip() if sent and sent.strip() else None


class People(Runtimes):
    """The Runtimes of everyone using a hosted server, created on first use and closed when idle."""

    def __init__(
        self,
        settings: Settings,
        *,
        clients: Callable[[str], OptimizelyClient],
        shared_token: str | None,
        mapped: Mapping[str, str],
        audit: Audit,
        ledger: Ledger,
        store: Store,
        max_runtimes: int = MAX_RUNTIMES,
    ) -> None:
        self._settings = settings
        self._clients = clients
        self._shared = shared_token
        self._mapped = dict(mapped)
        self._audit = audit
        self._ledger = ledger
        self._store = store
        self._max = max_runtimes
        self._runtimes: OrderedDict[tuple[str, str], tuple[float, Runtime]] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"People(runtimes={len(self._runtimes)})"

    def __len__(self) -> int:
        return len(self._runtimes)

    def runtime(self, ctx: Context[Any, Any]) -> Runtime:
        """The calling person's Runtime, for the Optimizely token their call uses."""
        person, sent = caller(ctx)
        if sent is not None and not _TOKEN_SHAPE.match(sent):
            raise ToolError(
                "The X-Optimizely-Token header is not a token: set it to your Optimizely personal token alone "
                "(no 'Bearer', no spaces) in this server's entry in your MCP client."
            )
        token = sent or self._mapped.get(person) or self._shared
        if token is None:
            raise ToolError(
                f"No Optimizely token for {person}: add the header X-Optimizely-Token with your Optimizely personal "
                "token to this server's entry in your MCP client, or ask the operator to map your name to a token."
            )
        key = (person, hashlib.sha256(token.encode()).hexdigest())
        now = time.monotonic()
        found = self._runtimes.get(key)
        if found is None:
            found = (now, self._new(person, token))
            self._limit(person)
        self._runtimes[key] = (now, found[1])
        self._runtimes.move_to_end(key)
        return found[1]

    def _new(self, person: str, token: str) -> Runtime:
        settings = self._settings
        signer = TokenSigner(person_secret(settings.secret, person), self._ledger, ttl=settings.token_ttl)
        guard = Guard(signer, self._audit, settings.confirm, person=person)
        return Runtime(settings=settings, connect=lambda: self._clients(token), guard=guard, store=self._store)

    def _limit(self, person: str) -> None:
        """Keep at most TOKENS_PER_PERSON runtimes for ``person`` and MAX_RUNTIMES in all, least recent first."""
        own = [key for key in self._runtimes if key[0] == person]
        for key in own[: max(0, len(own) - TOKENS_PER_PERSON + 1)]:
            self._retire(key)
        while len(self._runtimes) >= self._max:
            self._retire(next(iter(self._runtimes)))

    def _retire(self, key: tuple[str, str]) -> None:
        _, runtime = self._runtimes.pop(key)
        task = asyncio.get_running_loop().create_task(runtime.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def sweep(self, idle_seconds: float) -> int:
        """Close the runtimes nobody used for ``idle_seconds``; how many were closed."""
        cutoff = time.monotonic() - idle_seconds
        stale = [key for key, (used, _) in self._runtimes.items() if used < cutoff]
        for key in stale:
            self._retire(key)
        await asyncio.gather(*self._closing, return_exceptions=True)
        return len(stale)

    async def aclose(self) -> None:
        """Close everyone's clients, then the shared store (the registry owns it in hosted mode)."""
        for key in list(self._runtimes):
            self._retire(key)
        await asyncio.gather(*self._closing, return_exceptions=True)
        await self._store.aclose()
