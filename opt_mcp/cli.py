"""The ``opt-mcp`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opt_mcp import __version__

if TYPE_CHECKING:
    from opt_mcp.config import Settings
    from opt_mcp.doctor import Report


def _sandbox(args: argparse.Namespace) -> int:
    from opt_mcp.sandbox import SEED_PROJECT_ID, SandboxConfig, serve

    config = SandboxConfig.from_env(**{k: v for k, v in (("flags", args.flags), ("seed", args.seed)) if v is not None})
    print(
        f"opt-mcp sandbox: http://127.0.0.1:{args.port} (Flags API under /flags/v1, v2 under /v2); "
        f"default project {SEED_PROJECT_ID}; {config.flags} generated flags, seed {config.seed}. Ctrl-C stops it.",
        file=sys.stderr,
    )
    serve(config, port=args.port)
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    from opt_mcp.config import Settings

    return Settings.from_env(
        read_only=True if getattr(args, "read_only", False) else None,
        sandbox=True if getattr(args, "sandbox", False) else None,
    )


def _serve(args: argparse.Namespace) -> int:
    from opt_mcp.server import build_server

    settings = _settings(args)
    if args.transport != "stdio":
        from opt_mcp.hosting import HostedSettings, serve

        hosted = HostedSettings.from_env(
            host=args.host, port=args.port, stateless=True if args.stateless else None, no_auth=args.no_auth or None
        )
        flags = {"read_only": True if args.read_only else None, "sandbox": True if args.sandbox else None}
        serve(settings, hosted, workers=args.workers, flags=flags)
        return 0
    if settings.uses_sandbox:
        why = "OPT_MCP_SANDBOX is set" if settings.force_sandbox else "no OPTIMIZELY_API_TOKEN is set"
        logging.getLogger("opt_mcp").info(
            "serving the embedded sandbox (%s); default project %s. Set OPTIMIZELY_API_TOKEN to use your Optimizely "
            "account.",
            why,
            settings.default_project_id,
        )
    build_server(settings).run()
    return 0


def _tools(args: argparse.Namespace) -> int:
    rows = asyncio.run(_tool_rows(_settings(args)))
    width = max(len(name) for name, _, _ in rows)
    for name, size, title in rows:
        print(f"{name:<{width}}  {size:>5} tokens  {title}")
    print(f"{'total':<{width}}  {sum(size for _, size, _ in rows):>5} tokens")
    return 0


async def _tool_rows(settings: Settings) -> list[tuple[str, int, str]]:
    from mcp import Client

    from opt_mcp.budget import estimate_tokens
    from opt_mcp.server import build_server

    async with Client(build_server(settings)) as client:
        tools = (await client.list_tools()).tools
    return [
        (t.name, estimate_tokens(t.model_dump_json(by_alias=True, exclude_none=True)), t.title or "") for t in tools
    ]


def _doctor(args: argparse.Namespace) -> int:
    settings = _settings(args)
    report, configuration = asyncio.run(_diagnose(settings))
    from opt_mcp.doctor import config_file_hint

    print(f"opt-mcp {__version__} doctor")
    print("\n".join(report.lines()))
    print(f"\nClaude Desktop ({config_file_hint()}):\n{configuration}")
    if not settings.uses_sandbox:
        print("Replace <your Optimizely token> with your token; keep the file private.")
    return 0 if report.healthy else 1


async def _diagnose(settings: Settings) -> tuple[Report, str]:
    from opt_mcp.api.client import OptimizelyClient
    from opt_mcp.doctor import client_configuration, diagnose
    from opt_mcp.sandbox import Sandbox
    from opt_mcp.sandboxed import pacing_for, sandbox_client

    if settings.uses_sandbox:
        sandbox = Sandbox(settings.sandbox)
        client = sandbox_client(sandbox, rate_limits=pacing_for(sandbox.config.rate_limits))
    else:
        client = OptimizelyClient(settings.token, oauth=settings.oauth, base_url=settings.base_url)
    async with client:
        report = await diagnose(settings, client)
    return report, client_configuration(settings, settings.default_project_id)


def _call(args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.arguments)
    except ValueError as exc:
        raise ValueError(f"the arguments must be a JSON object, e.g. '{{\"limit\": 5}}' ({exc})") from None
    if not isinstance(arguments, dict):
        raise ValueError("the arguments must be a JSON object, e.g. '{\"limit\": 5}'")
    text, is_error = asyncio.run(_call_tool(_settings(args), args.tool, arguments))
    print(text)
    return 1 if is_error else 0


async def _call_tool(settings: Settings, tool: str, arguments: dict[str, Any]) -> tuple[str, bool]:
    from mcp import Client, MCPError

    from opt_mcp.server import build_server

    async with Client(build_server(settings)) as client:
        try:
            result = await client.call_tool(tool, arguments)
        except MCPError as exc:
            return f"error: {exc}", True
    if result.structured_content is not None and not result.is_error:
        return json.dumps(result.structured_content, indent=2, ensure_ascii=False), False
    return "\n".join(getattr(block, "text", "") for block in result.content), bool(result.is_error)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opt-mcp", description="MCP server for Optimizely Feature Experimentation")
    parser.add_argument("--version", action="version", version=f"opt-mcp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the MCP server (stdio, or hosted over HTTP)")
    serve.add_argument(
        "--transport",
        choices=["stdio", "http", "sse"],
        default="stdio",
        help="stdio for a desktop client; http (or sse: the same server) for a team: /mcp and /sse",
    )
    serve.add_argument("--host", default=None, help="hosted: address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_count, default=None, help="hosted: port (default 8000)")
    serve.add_argument("--stateless", action="store_true", help="hosted: no server-side sessions (for replicas)")
    serve.add_argument("--no-auth", action="store_true", help="hosted: no authentication (trying it locally only)")
    serve.add_argument(
        "--workers", type=_positive, default=1, help="hosted, with --stateless: worker processes (one per core)"
    )
    serve.add_argument("--read-only", action="store_true", help="hide every tool that writes (OPT_MCP_READ_ONLY)")
    serve.add_argument("--sandbox", action="store_true", help="use the embedded sandbox even if a token is set")
    serve.set_defaults(run=_serve)

    tools = commands.add_parser("tools", help="list the tools with their size in tokens")
    tools.add_argument("--read-only", action="store_true", help="as the server would list them in read-only mode")
    tools.set_defaults(run=_tools)

    call = commands.add_parser("call", help="call one tool through an in-memory MCP client and print the result")
    call.add_argument("tool", help="tool name, e.g. list_flags")
    call.add_argument("arguments", nargs="?", default="{}", help="JSON object of arguments, e.g. '{\"limit\": 5}'")
    call.add_argument("--sandbox", action="store_true", help="use the embedded sandbox even if a token is set")
    call.set_defaults(run=_call)

    doctor = commands.add_parser("doctor", help="check the token, project, permissions and rate limits; print a config")
    doctor.add_argument("--sandbox", action="store_true", help="check the embedded sandbox even if a token is set")
    doctor.set_defaults(run=_doctor)

    sandbox = commands.add_parser("sandbox", help="serve the simulated Optimizely API on 127.0.0.1")
    sandbox.add_argument("--port", type=int, required=True, help="loopback port to listen on")
    sandbox.add_argument("--flags", type=_count, help="generated flags to add (OPT_MCP_SANDBOX_FLAGS)")
    sandbox.add_argument("--seed", type=_count, help="seed of the generated data (OPT_MCP_SANDBOX_SEED)")
    sandbox.set_defaults(run=_sandbox)
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1, not {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # --version and --help end here, before anything heavy is imported
    from opt_mcp import logs

    try:
        logs.configure()
        code: int = args.run(args)
    except ValueError as exc:  # a bad setting: one clear line, no traceback
        print(f"opt-mcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
