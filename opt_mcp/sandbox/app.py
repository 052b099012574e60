"""The sandbox itself: one simulated account (its state, ASGI app, faults and request log), and serving it."""

from __future__ import annotations

import json
from collections.abc import Callable, MutableMapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opt_mcp.sandbox.config import SandboxConfig
from opt_mcp.sandbox.data import MAX_ENVIRONMENTS, build_store
from opt_mcp.sandbox.endpoints import Endpoints
from opt_mcp.sandbox.faults import Fault, FaultKind, FaultPlan, FaultTransport, RequestLog, RequestRecord
from opt_mcp.sandbox.gateway import Gateway
from opt_mcp.sandbox.oauth import TokenIssuer
from opt_mcp.sandbox.results import utc_now


class Sandbox:
    """One simulated Optimizely account: its state, its ASGI app, its faults and its request log."""

    def __init__(self, config: SandboxConfig | None = None, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config or SandboxConfig()
        if not 1 <= self.config.environments <= MAX_ENVIRONMENTS:
            raise ValueError(f"environments must be between 1 and {MAX_ENVIRONMENTS}")
        self.store = build_store(
            flags=self.config.flags,
            seed=self.config.seed,
            environments=self.config.environments,
            max_rules=self.config.max_rules,
        )
        self.faults = FaultPlan()
        self.log = RequestLog()
        self.endpoints = Endpoints(self.store, seed=self.config.seed, clock=clock, readings=self.config.readings)
        # Access tokens expire on the same clock as the results age on, so one fake clock moves both.
        self.oauth = TokenIssuer(self.config.oauth, self.config.readings, clock)
        self.gateway = Gateway(
            faults=self.faults,
            log=self.log,
            rate_limits=self.config.rate_limits,
            token=self.config.token,
            grants=self.config.grants,
            reset_style=self.config.reset_style,
            issuer=self.oauth,
        )
        self.app = Starlette(routes=self._routes())

    def _routes(self) -> list[Route]:
        e, wrap = self.endpoints, self.gateway.wrap
        flags = "/flags/v1/projects/{project_id}/flags"
        ruleset = flags + "/{flag_key}/environments/{environment_key}/ruleset"
        table: list[tuple[str, str, Callable[[Request], Any]]] = [
            ("GET", flags, e.list_flags),
            ("PATCH", flags, e.patch_flags),
            ("POST", flags + "/archived", e.archive_flags),
            ("POST", flags + "/unarchived", e.unarchive_flags),
            ("GET", flags + "/{flag_key}", e.get_flag),
            ("DELETE", flags + "/{flag_key}", e.delete_flag),
            ("GET", ruleset, e.get_ruleset),
            ("PATCH", ruleset, e.patch_ruleset),
            ("POST", ruleset + "/enabled", e.enable_ruleset),
            ("POST", ruleset + "/disabled", e.disable_ruleset),
            ("GET", "/flags/v1/projects/{project_id}/environments", e.list_environments),
            ("GET", "/v2/projects", e.list_projects),
            ("GET", "/v2/projects/{project_id}", e.get_project),
            # How get_results finds the flag rule behind an experiment id.
            ("GET", "/flags/v1/projects/{project_id}/rules/{experiment_id}", e.fetch_rule_by_experiment_id),
            ("GET", "/v2/experiments/{experiment_id}/results", e.experiment_results),
            ("GET", "/v2/experiments/{experiment_id}/report", e.experiment_report),
        ]
        routes = [Route(path, wrap(handler), methods=[method]) for method, path, handler in table]
        # Optimizely's authorization server is another host (app.optimizely.com); the sandbox is one origin for both.
        routes.append(Route("/oauth2/token", wrap(self.oauth.token, bearer=False), methods=["POST"]))
        # Anything else is still logged and answered in the API's style.
        routes.append(Route("/{path:path}", wrap(e.not_found), methods=["GET", "POST", "PATCH", "PUT", "DELETE"]))
        control = [
            Route("/_sandbox/requests", self._control_requests, methods=["GET", "DELETE"]),
            Route("/_sandbox/faults", self._control_faults, methods=["POST", "DELETE"]),
        ]
        return control + routes

    # Control endpoints, for a sandbox on a port driven from another process (never logged, never limited).
    async def _control_requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.log.clear()
            return Response(status_code=204)
        records = [{**asdict(r), "body": r.body.decode(errors="replace")} for r in self.log.records()]
        return JSONResponse(records)

    async def _control_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
            return Response(status_code=204)
        spec = json.loads(await request.body())
        if isinstance(spec.get("body"), str):
            spec["body"] = spec["body"].encode()
        self.faults.add(Fault(**spec))
        return Response(status_code=201)

    # ----------------------------------------------------------------------------------------------------------
    # For tests and the server
    # ----------------------------------------------------------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport into this sandbox, with transport-level faults (``opt_mcp.sandboxed.sandbox_client``
        wires a client to it: the sandbox itself knows no client)."""
        return FaultTransport(AppTransport(self.app), self.faults, self.log)

    def inject(self, kind: FaultKind, path: str = "", **options: Any) -> Fault:
        """Add a fault; see ``Fault`` for the options. Returns it, so a test can read ``hits``."""
        return self.faults.add(Fault(kind=kind, path=path, **options))

    def requests(self, method: str | None = None, path: str | None = None) -> list[RequestRecord]:
        """What reached the sandbox (optionally one method, and ``path`` a regex searched in the path)."""
        return self.log.records(method, path)


class AppTransport(httpx.AsyncBaseTransport):
    """httpx into an ASGI app in this process, for answers that are not streamed (the sandbox's).

    ``httpx.ASGITransport`` does this too, but on every request it looks for trio through an import that fails
    without sniffio: a search of the file system that cost a hosted server about 4 % of its CPU (bench/load)."""

    def __init__(self, app: Starlette) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(key.lower(), value) for key, value in request.headers.raw],
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "server": (url.host, url.port),
            "client": ("127.0.0.1", 123),
            "root_path": "",
        }
        delivered = False
        status, headers, parts = 500, [], []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:  # the whole body was read: the next thing a handler could learn is a disconnect
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        await self._app(scope, receive, send)
        return httpx.Response(status, headers=headers, content=b"".join(parts), request=request)


def serve(config: SandboxConfig, *, port: int, host: str = "127.0.0.1") -> None:
    """Serve a sandbox on a loopback port until interrupted."""
    import uvicorn  # imported here: only this command needs it

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("The sandbox only listens on loopback (127.0.0.1)")
    uvicorn.run(Sandbox(config).app, host=host, port=port, log_level="warning")
