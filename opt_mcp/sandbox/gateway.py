"""What stands in front of every sandbox endpoint: Bearer auth (access tokens that expire), rate limits with
``X-RATELIMIT-*`` headers, HTTP-level faults, error bodies in each API's style, and the request log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from opt_mcp.sandbox.endpoints import ApiError, problem_response, v2_error_response
from opt_mcp.sandbox.faults import Fault, FaultPlan, RequestLog, RequestRecord
from opt_mcp.sandbox.limits import Limit, SandboxLimits
from opt_mcp.sandbox.oauth import TokenIssuer, masked_form

Handler = Callable[[Request], Awaitable[Response]]
_RESULTS = re.compile(r"^/v2/(experiments|campaigns)/[^/]+/results")
_BEARER = re.compile(r"^Bearer\s+(\S+)\s*$", re.IGNORECASE)
_UNAUTHORIZED = "Invalid credentials: send Authorization: Bearer <token>."


@dataclass(frozen=True)
class _Budget:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float


@dataclass
class _Windows:
    """Requests seen per (token, class) in sliding windows."""

    sent: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def take(self, who: str, name: str, windows: tuple[Limit, ...], now: float) -> _Budget:
        """Count one more request if it fits; the budget after it, described by the longest window."""
        seen = self.sent.setdefault((who, name), deque())
        longest = max(windows, key=lambda w: w.seconds)
        while seen and seen[0] <= now - longest.seconds:
            seen.popleft()
        allowed = True
        reset_at = now + longest.seconds
        for window in windows:
            in_window = [t for t in seen if t > now - window.seconds]
            if len(in_window) >= window.requests:
                allowed = False
                reset_at = in_window[-window.requests] + window.seconds
        if allowed:
            seen.append(now)
        used = sum(1 for t in seen if t > now - longest.seconds)
        return _Budget(allowed, longest.requests, max(0, longest.requests - used), reset_at)


class Gateway:
    """Wraps each endpoint handler. ``token`` fixes the one accepted Bearer token (None: any non-empty one);
    a token in ``grants`` is also accepted, and sees only the projects granted to it, as a person's token does.
    An access token ``issuer`` handed out is accepted until it expires; with an OAuth app configured there, no
    other token is (but ``token`` and ``grants``)."""

    def __init__(
        self,
        *,
        faults: FaultPlan,
        log: RequestLog,
        rate_limits: SandboxLimits,
        token: str | None,
        grants: Mapping[str, frozenset[int]] | None = None,
        reset_style: Literal["epoch", "seconds"] = "epoch",
        issuer: TokenIssuer | None = None,
    ) -> None:
        self.faults = faults
        self.log = log
        self.rate_limits = rate_limits
        self.token = token
        self.grants = dict(grants or {})
        self.reset_style = reset_style
        self.issuer = issuer
        self._windows = _Windows()
        self._lock = asyncio.Lock()

    def wrap(self, handler: Handler, *, bearer: bool = True) -> Handler:
        """``handler`` behind the gateway; ``bearer=False`` for the OAuth token endpoint, which takes no Bearer
        token and no part of the API's rate limits (and whose secrets the request log masks)."""

        async def endpoint(request: Request) -> Response:
            return await (self._serve(request, handler) if bearer else self._serve_open(request, handler))

        return endpoint

    async def _serve_open(self, request: Request, handler: Handler) -> Response:
        path: str = request.scope["path"]
        body = await request.body()
        fault = self.faults.take(request.method, path, transport=False)
        if fault is not None and fault.kind == "latency":
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.then is not None:
            fault.then()
        if fault is not None and fault.kind == "status" and not fault.after:
            response = _fault_response(fault, v2=True)
        else:
            response = await handler(request)
            if fault is not None and fault.kind != "latency":
                response = _after_fault(fault, response, v2=True)
        self.log.add(
            RequestRecord(
                method=request.method,
                path=path,
                query=masked_form(request.scope["query_string"].decode("latin-1")),
                body=masked_form(body).encode(),
                status=response.status_code,
                authorized=False,
                at=time.time(),
                fault=fault.kind if fault else None,
            )
        )
        return response

    async def _serve(self, request: Request, handler: Handler) -> Response:
        # From the scope: request.url rebuilds and reparses the whole URL on each use.
        path: str = request.scope["path"]
        body = await request.body()
        v2 = path.startswith("/v2/")
        token, refusal = self._bearer(request)
        fault = self.faults.take(request.method, path, transport=False)
        fault_name = fault.kind if fault else None
        if fault is not None and fault.kind == "latency":
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.then is not None:
            fault.then()
        if fault is not None and fault.kind == "status" and not fault.after:
            response = _fault_response(fault, v2)
        elif token is None:
            response = _error(401, "Unauthorized", refusal, v2)
        else:
            request.state.grant = self.grants.get(token)
            response = await self._limited(request, handler, token, v2)
            if fault is not None and fault.kind != "latency":
                response = _after_fault(fault, response, v2)
        raw_path = request.scope.get("raw_path") or path.encode()
        self.log.add(
            RequestRecord(
                method=request.method,
                path=raw_path.decode("latin-1"),
                query=request.scope["query_string"].decode("latin-1"),
                body=body,
                status=response.status_code,
                authorized=token is not None,
                at=time.time(),
                fault=fault_name,
            )
        )
        return response

    def _bearer(self, request: Request) -> tuple[str | None, str]:
        """The accepted Bearer token, or None and the detail of the 401 that refuses it."""
        match = _BEARER.match(request.headers.get("authorization", ""))
        if match is None:
            return None, _UNAUTHORIZED
        token = match.group(1)
        if token in self.grants:
            return token, ""
        state = self.issuer.check(token) if self.issuer is not None else "unknown"
        if state == "valid":
            return token, ""
        if state == "expired":
            says = self.issuer is not None and self.issuer.readings.expiry_body == "says_expired"
            return None, "The access token expired." if says else _UNAUTHORIZED
        if self.token is not None:
            accepted = hmac.compare_digest(token.encode(), self.token.encode())
        else:  # any token, but in an OAuth account, which accepts only the tokens it issued
            accepted = self.issuer is None or self.issuer.config is None
        return (token, "") if accepted else (None, _UNAUTHORIZED)

    async def _limited(self, request: Request, handler: Handler, token: str, v2: bool) -> Response:
        who = hashlib.sha256(token.encode()).hexdigest()
        classes = [("flags", self.rate_limits.flags)] if not v2 else [("v2", self.rate_limits.v2)]
        if _RESULTS.match(request.scope["path"]):
            classes.append(("results", self.rate_limits.results))
        now = time.time()
        budget: _Budget | None = None
        async with self._lock:
            for name, windows in classes:
                if windows:
                    budget = self._windows.take(who, name, windows, now)
                    if not budget.allowed:
                        break
        headers: dict[str, str] = {}
        if budget is not None:
            wait = max(0.0, budget.reset_at - now)
            reset = str(int(budget.reset_at) + 1) if self.reset_style == "epoch" else f"{math.ceil(wait)}"
            headers = {
                "X-RATELIMIT-LIMIT": str(budget.limit),
                "X-RATELIMIT-REMAINING": str(budget.remaining),
                "X-RATELIMIT-RESET": reset,
            }
        if budget is not None and not budget.allowed:
            response = _error(429, "Too Many Requests", "Rate limit exceeded. Retry after the reset time.", v2)
        else:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = (
                    Response(status_code=exc.status) if exc.empty else _error(exc.status, exc.title, exc.detail, v2)
                )
        response.headers.update(headers)
        return response


def _error(status: int, title: str, detail: str, v2: bool) -> Response:
    return v2_error_response(status, detail or title) if v2 else problem_response(status, title, detail or title)


def _fault_response(fault: Fault, v2: bool) -> Response:
    if fault.body is not None:
        response = Response(fault.body, status_code=fault.status, media_type="application/json")
    else:
        response = _error(fault.status, "Injected fault", f"Sandbox fault: HTTP {fault.status}", v2)
    response.headers.update(fault.headers)
    return response


def _after_fault(fault: Fault, response: Response, v2: bool) -> Response:
    """Faults applied to an answer the endpoint already produced (the request was processed)."""
    body = bytes(response.body)
    if fault.kind == "status":
        return _fault_response(fault, v2)
    if fault.kind == "malformed":
        return Response(fault.body or b'{"items": [{"key": ', status_code=200, media_type="application/json")
    if fault.kind == "truncated":
        return Response(body[: len(body) // 2], status_code=response.status_code, media_type="application/json")
    if fault.kind == "empty":
        return Response(b"", status_code=200, media_type="application/json")
    return response
