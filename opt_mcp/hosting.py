"""Hosted team mode: one ASGI app with Streamable HTTP at ``/mcp``, the legacy SSE transport at ``/sse`` (messages at
``/messages/``) and ``/healthz``.

Every MCP request passes, in order: the Host and Origin allow-lists (DNS-rebinding protection: 421 / 403), the
bearer check (401 with ``WWW-Authenticate``), then admission: the body read within a size and time limit (413 /
408) and a bounded number of requests in flight per person (429 after a short wait). Only then does the SDK's
transport see it, and the tool call runs with the calling person's Runtime (``opt_mcp.people``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opt_mcp import __version__, logs
from opt_mcp.api.client import RetryPolicy
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.auth import AuthConfigError, IntrospectedTokens, StaticTokens, read_name_lines
from opt_mcp.config import Settings
from opt_mcp.people import ANONYMOUS, person_in
from opt_mcp.sandbox import Sandbox
from opt_mcp.server import build_server
from opt_mcp.settings import (
    ALLOWED_HOSTS,
    ALLOWED_ORIGINS,
    AUTH_TOKENS_FILE,
    CORS_ORIGINS,
    INTROSPECTION_CLIENT_ID,
    INTROSPECTION_CLIENT_SECRET,
    LEDGER_FILE,
    MAX_BODY_BYTES,
    MAX_IN_FLIGHT,
    OAUTH_INTROSPECTION_URL,
    OAUTH_ISSUER,
    OAUTH_SCOPES,
    OPTIMIZELY_TOKENS_FILE,
    PUBLIC_URL,
    SECRET,
    STATELESS,
    ConfigError,
)

log = logging.getLogger("opt_mcp")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
IDLE_RUNTIME_SECONDS = 900.0
SWEEP_EVERY_SECONDS = 60.0
# Browser clients need these to talk MCP (and to send their Optimizely token) across origins.
CORS_HEADERS = [
    "Authorization",
    "Content-Type",
    "Last-Event-ID",
    "Mcp-Method",
    "Mcp-Name",
    "Mcp-Protocol-Version",
    "Mcp-Session-Id",
    "X-Optimizely-Token",
]


@dataclass(frozen=True)
class HostedSettings:
    """How the hosted server listens and whom it lets in. Secrets are never part of a repr."""

    host: str = "127.0.0.1"
    port: int = 8000
    stateless: bool = False
    no_auth: bool = False
    auth_tokens_file: str | None = None
    optimizely_tokens_file: str | None = None
    oauth_issuer: str | None = None
    oauth_introspection_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = field(default=None, repr=False)
    oauth_scopes: tuple[str, ...] = ()
    public_url: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = MAX_BODY_BYTES.default
    max_in_flight: int = MAX_IN_FLIGHT.default
    queue_seconds: float = 10.0
    body_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.no_auth and (self.auth_tokens_file or self.oauth_issuer):
            raise ConfigError("--no-auth contradicts OPT_MCP_AUTH_TOKENS_FILE / OPT_MCP_OAUTH_ISSUER: choose one")
        if not self.no_auth and bool(self.auth_tokens_file) == bool(self.oauth_issuer):
            raise ConfigError(
                "hosted mode needs authentication: set OPT_MCP_AUTH_TOKENS_FILE (a file of name:token lines) or "
                "OPT_MCP_OAUTH_ISSUER (with OPT_MCP_OAUTH_INTROSPECTION_URL and OPT_MCP_PUBLIC_URL), not both; "
                "or pass --no-auth to try it on this machine"
            )
        if self.oauth_issuer and not (self.oauth_introspection_url and self.public_url):
            raise ConfigError("OPT_MCP_OAUTH_ISSUER needs OPT_MCP_OAUTH_INTROSPECTION_URL and OPT_MCP_PUBLIC_URL")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port must be from 1 to 65535, not {self.port}")

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def resource_url(self) -> str | None:
        """This server's MCP endpoint as OAuth clients name it (RFC 8707 resource; RFC 9728 metadata)."""
        return self.public_url.rstrip("/") + "/mcp" if self.public_url else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **flags: Any) -> HostedSettings:
        """Read the OPT_MCP_* hosting variables (each URL checked as it is read); command-line flags (when not
        None) win."""
        values: dict[str, Any] = {
            "stateless": STATELESS.read(environ),
            "auth_tokens_file": AUTH_TOKENS_FILE.read(environ),
            "optimizely_tokens_file": OPTIMIZELY_TOKENS_FILE.read(environ),
            "oauth_issuer": OAUTH_ISSUER.read(environ),
            "oauth_introspection_url": OAUTH_INTROSPECTION_URL.read(environ),
            "oauth_client_id": INTROSPECTION_CLIENT_ID.read(environ),
            "oauth_client_secret": INTROSPECTION_CLIENT_SECRET.read(environ),
            "oauth_scopes": OAUTH_SCOPES.read(environ),
            "public_url": PUBLIC_URL.read(environ),
            "allowed_hosts": ALLOWED_HOSTS.read(environ),
            "allowed_origins": ALLOWED_ORIGINS.read(environ),
            "cors_origins": CORS_ORIGINS.read(environ),
            "max_body_bytes": MAX_BODY_BYTES.read(environ),
            "max_in_flight": MAX_IN_FLIGHT.read(environ),
        }
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(**values)


# ----------------------------------------------------------------------------------------------------------------------
# Admission: body limits and requests in flight per person
# ----------------------------------------------------------------------------------------------------------------------


class InFlight:
    """At most ``limit`` requests in flight per person; a request over it waits up to ``wait`` seconds."""

    def __init__(self, limit: int, wait: float) -> None:
        self._limit = limit
        self._wait = wait
        self._counts: dict[str, int] = {}
        self._changed = asyncio.Condition()

    async def enter(self, person: str) -> bool:
        async with self._changed:
            # Always through wait_for, even with room: it yields to the event loop once, so requests already
            # admitted move on before a burst of new arrivals. Without it bench/load.py's p99 went from 250 to 400 ms.
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._counts.get(person, 0) < self._limit), self._wait
                )
            except TimeoutError:
                return False
            self._counts[person] = self._counts.get(person, 0) + 1
            return True

    async def leave(self, person: str) -> None:
        async with self._changed:
            left = self._counts[person] - 1
            if left:
                self._counts[person] = left
            else:
                del self._counts[person]
            self._changed.notify_all()


class Admission:
    """Reads a POST body whole (within the size and time limits) before the transport sees it, and counts the
    request against its person's in-flight limit. GET streams (SSE) are long-lived and not counted."""

    def __init__(self, app: ASGIApp, *, in_flight: InFlight, max_body: int, body_seconds: float) -> None:
        self.app = app
        self.in_flight = in_flight
        self.max_body = max_body
        self.body_seconds = body_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _plain(413, "Request body too large")(scope, receive, send)
            return
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    if len(body) > self.max_body:
                        await _plain(413, "Request body too large")(scope, receive, send)
                        return
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _plain(408, "Request body not received in time")(scope, receive, send)
            return
        person = person_in(scope) or ANONYMOUS
        if not await self.in_flight.enter(person):
            await _plain(429, "Too many requests in flight for you; retry shortly", {"Retry-After": "1"})(
                scope, receive, send
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        try:
            await self.app(scope, replay, send)
        finally:
            await self.in_flight.leave(person)


class HostCheck:
    """DNS-rebinding protection before anything else: a Host or Origin not on the allow-lists is refused."""

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings) -> None:
        self.app = app
        self.security = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = await self.security.validate_request(Request(scope, receive), is_post=False)
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(text, status_code=status, headers=dict(headers or {}), media_type="text/plain")


# ----------------------------------------------------------------------------------------------------------------------
# The app
# ----------------------------------------------------------------------------------------------------------------------


def verifier_for(hosted: HostedSettings) -> TokenVerifier | None:
    """The operator's token file or the OAuth introspection verifier; None with --no-auth."""
    try:
        if hosted.auth_tokens_file:
            return StaticTokens.from_file(hosted.auth_tokens_file)
    except AuthConfigError as exc:
        raise ConfigError(str(exc)) from None
    if hosted.oauth_introspection_url and hosted.resource_url:
        return IntrospectedTokens(
            hosted.oauth_introspection_url,
            resource_url=hosted.resource_url,
            client_id=hosted.oauth_client_id,
            client_secret=hosted.oauth_client_secret,
        )
    return None


def security_for(hosted: HostedSettings) -> TransportSecuritySettings:
    """Loopback names are always allowed; OPT_MCP_ALLOWED_HOSTS adds the names the server is reached by ("*" turns
    the Host check off, for a proxy that owns Host), OPT_MCP_ALLOWED_ORIGINS the browser origins."""
    return TransportSecuritySettings(
        enable_dns_rebinding_protection="*" not in hosted.allowed_hosts,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", *hosted.allowed_hosts],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", *hosted.allowed_origins],
    )


def build_app(
    settings: Settings,
    hosted: HostedSettings,
    *,
    sandbox: Sandbox | None = None,
    rate_limits: RateLimits | None = None,
    retry: RetryPolicy | None = None,
    verifier: TokenVerifier | None = None,
    sandbox_url: str | None = None,
) -> Starlette:
    """The hosted server as an ASGI app. Tests pass their own sandbox, pacing and (for OAuth) verifier; the worker
    processes of one server pass the URL of the sandbox they share."""
    verifier = verifier or verifier_for(hosted)
    try:
        mapped = (
            read_name_lines(hosted.optimizely_tokens_file, what=OPTIMIZELY_TOKENS_FILE.name, min_secret=8)
            if hosted.optimizely_tokens_file
            else {}
        )
    except AuthConfigError as exc:
        raise ConfigError(str(exc)) from None
    server = build_server(
        settings, sandbox=sandbox, rate_limits=rate_limits, retry=retry, people=mapped, sandbox_url=sandbox_url
    )
    people = server.people
    assert people is not None
    security = security_for(hosted)
    # The transport's own Starlette app is made for its session manager; requests go to the transport's endpoint
    # straight from this app's route, without a second Starlette (router and error layers) on every request.
    server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=hosted.stateless,
        transport_security=security,
        max_request_body_size=hosted.max_body_bytes,
        host=hosted.host,
    )
    sse_app = server.sse_app(
        sse_path="/sse",
        message_path="/messages/",
        transport_security=security,
        max_request_body_size=hosted.max_body_bytes,
        host=hosted.host,
    )
    in_flight = InFlight(hosted.max_in_flight, hosted.queue_seconds)
    metadata_url = build_resource_metadata_url(AnyHttpUrl(hosted.resource_url)) if hosted.resource_url else None

    def guarded(app: ASGIApp) -> ASGIApp:
        inner: ASGIApp = Admission(
            app, in_flight=in_flight, max_body=hosted.max_body_bytes, body_seconds=hosted.body_seconds
        )
        if verifier is not None:
            inner = RequireAuthMiddleware(inner, list(hosted.oauth_scopes), metadata_url)
            inner = AuthContextMiddleware(inner)
            inner = AuthenticationMiddleware(inner, backend=BearerAuthBackend(verifier))
        return HostCheck(inner, security)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    routes: list[Any] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/mcp", guarded(StreamableHTTPASGIApp(server.session_manager))),
        Route("/sse", guarded(sse_app)),
        Route("/messages/", guarded(sse_app)),
    ]
    if hosted.resource_url and hosted.oauth_issuer:
        routes += create_protected_resource_routes(
            resource_url=AnyHttpUrl(hosted.resource_url),
            authorization_servers=[AnyHttpUrl(hosted.oauth_issuer)],
            scopes_supported=list(hosted.oauth_scopes) or None,
            resource_name="opt-mcp",
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async def sweep() -> None:
            while True:
                await asyncio.sleep(SWEEP_EVERY_SECONDS)
                await people.sweep(IDLE_RUNTIME_SECONDS)

        async with server.session_manager.run():
            # What is alive once started (modules, the sandbox's data) stays alive: out of the collector's sight,
            # every collection under load is cheaper (bench/load.py: about 6 % more calls a second).
            gc.freeze()
            sweeper = asyncio.create_task(sweep())
            try:
                yield
            finally:
                sweeper.cancel()
                await people.aclose()
                if isinstance(verifier, IntrospectedTokens):
                    await verifier.aclose()

    middleware = []
    if hosted.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(hosted.cors_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=CORS_HEADERS,
                expose_headers=["Mcp-Session-Id"],
            )
        )
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


# How a hosted server's worker processes learn what the command line said (they are started by uvicorn).
_WORKER_FLAGS = "_OPT_MCP_WORKER_FLAGS"
_WORKER_SANDBOX = "_OPT_MCP_WORKER_SANDBOX_URL"


def worker_app() -> Starlette:
    """The app of one worker process of ``opt-mcp serve --transport http --workers N``."""
    logs.configure()  # in its own process, as the command does in its own
    flags = json.loads(os.environ[_WORKER_FLAGS])
    return build_app(
        Settings.from_env(**flags["settings"]),
        HostedSettings.from_env(**flags["hosted"]),
        sandbox_url=os.environ.get(_WORKER_SANDBOX),
    )


def serve(
    settings: Settings, hosted: HostedSettings, *, workers: int = 1, flags: Mapping[str, bool | None] | None = None
) -> None:
    """Run the hosted server until interrupted: in this process, or in ``workers`` processes (``flags`` are the
    command line's settings flags, for them to read the same settings)."""
    import uvicorn  # imported here: stdio never needs it

    if workers > 1 and not hosted.stateless:
        raise ConfigError("--workers needs --stateless: a session lives in one process, its next request may not")
    how = "no authentication" if hosted.no_auth else ("OAuth" if hosted.oauth_issuer else "operator tokens")
    log.info(
        "serving http://%s:%s/mcp (Streamable HTTP) and /sse (SSE), %s%s%s%s.",
        hosted.host,
        hosted.port,
        how,
        ", stateless" if hosted.stateless else "",
        f", {workers} workers" if workers > 1 else "",
        "; embedded sandbox" if settings.uses_sandbox else "",
    )
    if hosted.no_auth and not hosted.loopback:
        log.warning(
            "listening on %s without authentication: anyone who can reach this port can use the shared Optimizely "
            "token. Use OPT_MCP_AUTH_TOKENS_FILE or OAuth, or bind 127.0.0.1.",
            hosted.host,
        )
    if not hosted.loopback and not hosted.allowed_hosts:
        log.warning(
            "only loopback Host names are accepted; set OPT_MCP_ALLOWED_HOSTS to the names clients use to reach "
            "this server."
        )
    options: dict[str, Any] = {
        "host": hosted.host,
        "port": hosted.port,
        "log_level": "warning",
        "access_log": False,  # SSE message URLs carry session ids
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": 10,
        "server_header": False,
        "log_config": None,
    }
    if workers <= 1:
        uvicorn.Server(uvicorn.Config(build_app(settings, hosted), **options)).run()
        return
    with contextlib.ExitStack() as stack:
        _share_between_workers(settings, hosted, flags or {}, stack)
        uvicorn.run("opt_mcp.hosting:worker_app", factory=True, workers=workers, **options)


def _share_between_workers(
    settings: Settings, hosted: HostedSettings, flags: Mapping[str, bool | None], stack: contextlib.ExitStack
) -> None:
    """What the workers must share, through their environment: the signing secret (a token issued by one verifies
    on another), the used-token ledger (a file), one sandbox (its own process), and the command line's flags."""
    environ = os.environ
    if not SECRET.given(environ):
        environ[SECRET.name] = secrets.token_hex(32)
    if not settings.ledger_file:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="opt-mcp-"))
        environ[LEDGER_FILE.name] = os.path.join(folder, "used-confirmation-tokens.sqlite")
    if settings.uses_sandbox:
        port = _free_port()
        sandbox = stack.enter_context(
            subprocess.Popen(  # noqa: S603 - this interpreter, this package, fixed arguments
                [sys.executable, "-m", "opt_mcp", "sandbox", "--port", str(port)], stderr=subprocess.DEVNULL
            )
        )
        stack.callback(sandbox.terminate)
        _wait_for_port(port)
        environ[_WORKER_SANDBOX] = f"http://127.0.0.1:{port}"
    hosted_flags = {"host": hosted.host, "port": hosted.port, "stateless": True, "no_auth": hosted.no_auth or None}
    environ[_WORKER_FLAGS] = json.dumps({"hosted": hosted_flags, "settings": dict(flags)})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ConfigError(f"the shared sandbox did not start on port {port}") from None
            time.sleep(0.05)
