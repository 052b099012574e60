"""The ``opt-mcp`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from opt_mcp import __version__


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opt-mcp", description="MCP server for Optimizely Feature Experimentation")
    parser.add_argument("--version", action="version", version=f"opt-mcp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    sandbox = commands.add_parser("sandbox", help="serve the simulated Optimizely API on 127.0.0.1")
    sandbox.add_argument("--port", type=int, required=True, help="loopback port to listen on")
    sandbox.add_argument("--flags", type=_count, help="generated flags to add (OPT_MCP_SANDBOX_FLAGS)")
    sandbox.add_argument("--seed", type=_count, help="seed of the generated data (OPT_MCP_SANDBOX_SEED)")
    sandbox.set_defaults(run=_sandbox)
    return parser


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ValueError as exc:  # a bad setting: one clear line, no traceback
        print(f"opt-mcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
