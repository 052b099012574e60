"""What many test modules need: reading a tool result, building a server on a test's sandbox, the elicitation user,
the write log, and launching ``opt-mcp`` as a client would. Fixtures live in ``conftest.py``; these are plain
functions, imported where used."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.budget import estimate_tokens
from opt_mcp.config import Settings
from opt_mcp.sandbox import Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.server import OptMCPServer, build_server
from tests.conftest import FAST_RETRY

if TYPE_CHECKING:
    from mcp.server import MCPServer

    from opt_mcp.runtime import Runtime

# ------------------------------------------------------------------------------------------------------------------
# Tool results
# ------------------------------------------------------------------------------------------------------------------


def text(result: CallToolResult) -> str:
    """The result's text blocks, as a model reads them."""
    return "\n".join(getattr(block, "text", "") for block in result.content)


def data(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a result that must not be an error (the error's text is the failure message)."""
    assert not result.is_error, text(result)
    return result.structured_content or {}


def cost(result: CallToolResult) -> int:
    """What the result costs, measured on the client side exactly as the server promises to bound it."""
    compact = json.dumps(result.structured_content, separators=(",", ":"), ensure_ascii=False)
    return estimate_tokens(text(result)) + estimate_tokens(compact)


# ------------------------------------------------------------------------------------------------------------------
# A server on the test's sandbox, and what reached it
# ------------------------------------------------------------------------------------------------------------------


def make(sandbox: Sandbox, **overrides: Any) -> OptMCPServer:
    """The server for ``Settings(**overrides)`` on this sandbox, without pacing and with quick retries."""
    return build_server(Settings(**overrides), sandbox=sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY)


def make_server(sandbox: Sandbox | None = None, settings: Settings | None = None) -> MCPServer[Runtime]:
    """The server for ``settings`` (default: none set) on this sandbox (default: a fresh seed sandbox)."""
    sandbox = sandbox or Sandbox(SandboxConfig(rate_limits=SandboxLimits.unlimited()))
    return build_server(settings or Settings(), sandbox=sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY)


def writes(sandbox: Sandbox) -> list[str]:
    """Every write that reached the sandbox and got an answer, as ``"METHOD /path"``."""
    return [f"{r.method} {r.path}" for r in sandbox.requests() if r.method != "GET" and r.status]


class User:
    """An elicitation callback: answers as told, remembering what it was shown."""

    def __init__(self, action: str = "accept", confirm: bool = True, before_answer: Any = None) -> None:
        self.action, self.confirm, self.before_answer = action, confirm, before_answer
        self.shown: list[str] = []

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.shown.append(params.message)
        if self.before_answer is not None:
            await self.before_answer(len(self.shown))
        if self.action != "accept":
            return ElicitResult(action=self.action)
        return ElicitResult(action="accept", content={"confirm": self.confirm})


# ------------------------------------------------------------------------------------------------------------------
# opt-mcp in its own process, as clients launch it
# ------------------------------------------------------------------------------------------------------------------

MODES = ["auto", "legacy"]  # the protocol eras an mcp.Client speaks: 2026-07-28 (auto) and 2025-11-25 (legacy)
# The official MCP Inspector, from the npm registry (tests marked ``network``).
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
Arguments = dict[str, Any] | Callable[[list[dict[str, Any]]], dict[str, Any]]


def installed(name: str) -> str:
    """The console script installed next to this interpreter (the venv's bin), as a client finds it on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed"
    return found


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any OPTIMIZELY_ or OPT_MCP_ setting (so the sandbox serves), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIMIZELY_", "OPT_MCP_"))}
    return {**env, **(extra or {})}


def rpc_call(request_id: int, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC ``tools/call`` request."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }


def serve_stdio(env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``opt-mcp serve`` started as a desktop client starts it: pipes for stdin, stdout and stderr, text mode."""
    return subprocess.Popen(
        [installed("opt-mcp"), "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(env),
    )


def stdio_exchange(env: dict[str, str], calls: list[tuple[str, Arguments]]) -> tuple[list[dict[str, Any]], str]:
    """Run ``opt-mcp serve`` over stdio as a desktop client does; the answers to ``calls`` in order, and stderr.
    Arguments may be a function of the answers so far (to pass on a confirmation token)."""
    process = serve_stdio(env)
    assert process.stdin and process.stdout and process.stderr
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
    process.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello}) + "\n")
    process.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
    answers: list[dict[str, Any]] = []
    try:
        for number, (tool, arguments) in enumerate(calls, start=1):
            given = arguments(answers) if callable(arguments) else arguments
            process.stdin.write(json.dumps(rpc_call(number, tool, given)) + "\n")
            process.stdin.flush()
            while True:
                message = json.loads(process.stdout.readline())
                if message.get("id") == number:
                    answers.append(message["result"])
                    break
    finally:
        process.stdin.close()
        process.wait(timeout=30)
    return answers, process.stderr.read()


# ------------------------------------------------------------------------------------------------------------------
# A hosted server on a port
# ------------------------------------------------------------------------------------------------------------------


@asynccontextmanager
async def connect(
    url: str, transport: str, *, bearer: str | None = None, optimizely: str | None = None, mode: str = "auto"
) -> AsyncIterator[Client]:
    """An mcp.Client of a hosted server over Streamable HTTP (``http``) or SSE, with a person's headers."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    if optimizely:
        headers["X-Optimizely-Token"] = optimizely
    async with AsyncExitStack() as stack:
        if transport == "http":
            http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=30))
            target: Any = streamable_http_client(f"{url}/mcp", http_client=http)
        else:
            target = sse_client(f"{url}/sse", headers=headers)
        yield await stack.enter_async_context(Client(target, mode=mode))
