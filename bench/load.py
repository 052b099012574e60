#!/usr/bin/env python3
"""Hosted load: N concurrent MCP sessions, each making M tool calls, against `opt-mcp serve --transport http` (the
embedded sandbox without rate limits, so the server's own cost is measured, not Optimizely's pacing).

Run from the repository root with the project installed: `python bench/load.py [--sessions 200] [--calls 20]`.
The server runs in its own process (its memory is measured there); 20 people authenticate with their own bearer
tokens, 10 sessions each by default. Prints throughput, latency percentiles, errors and server memory, and writes
bench/load-<client>-<era>-<shape>.json (raw output, not committed: bench/baseline.md is the curated record). No
assertions: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h11
import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

RESULTS = Path(__file__).parent / "load-{client}-{era}-{shape}.json"
PEOPLE = 20
MODERN = "2026-07-28"
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("list_flags", {"limit": 5}),
    ("get_flag", {"flag_key": "product_sort"}),
    ("get_results", {"flag_key": "product_sort", "environment": "production"}),
    ("list_projects", {}),
    ("list_environments", {}),
]


# The floor: a bare MCPServer answering each of the same tools at once with a line of text, served as `opt-mcp serve
# --stateless` serves (Streamable HTTP, uvicorn, same options), without authentication or any work behind a tool.
FLOOR_SERVER = """
import sys

import uvicorn
from mcp.server import MCPServer

server = MCPServer("floor")
for name in ("list_flags", "get_flag", "get_results", "list_projects", "list_environments"):
    def answer(flag_key: str | None = None, limit: int | None = None, environment: str | None = None) -> str:
        return "done"
    server.add_tool(answer, name=name)
app = server.streamable_http_app(streamable_http_path="/mcp", stateless_http=True)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
            timeout_keep_alive=5, server_header=False, log_config=None)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def family(pid: int) -> list[int]:
    """The server process and its descendants (workers, the shared sandbox)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            todo += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in family(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def memory_kib(pid: int) -> dict[str, int]:
    fields = {"VmRSS": 0, "VmHWM": 0}
    for member in family(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                fields[key] += int(value.split()[0])
    return fields


class Connection:
    """One keep-alive HTTP/1.1 connection spoken with h11 over asyncio streams: the cheapest client there is, so
    the load generator (which shares the machine) costs little next to the server it measures."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.h11 = h11.Connection(h11.CLIENT)

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        if self.h11.our_state is h11.DONE:
            self.h11.start_next_cycle()
        sent = [("host", f"{self.host}:{self.port}"), ("content-length", str(len(body))), *headers.items()]
        self.writer.write(self.h11.send(h11.Request(method=method, target=path, headers=sent)))
        self.writer.write(self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage()))
        status, answer_headers, chunks = 0, {}, bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, answer_headers, bytes(chunks)

    def close(self) -> None:
        self.writer.close()


async def raw_session(port: int, token: str, calls: int, era: str, latencies: list[float], errors: list[str]) -> None:
    """A Streamable HTTP session spoken directly. Legacy era (2025-11-25): initialize, tools/call in the session,
    DELETE. 2026-07-28: no handshake, each tools/call stands alone with its protocol envelope in ``_meta``."""
    headers = {
        "authorization": f"Bearer {token}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
    }
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
    connection = Connection("127.0.0.1", port)
    try:
        await connection.open()
        envelope: dict[str, Any] = {}
        if era == "legacy":
            opening = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello}).encode()
            _, answer_headers, _ = await connection.request("POST", "/mcp", headers, opening)
            if "mcp-session-id" in answer_headers:  # none when the server is stateless
                headers["mcp-session-id"] = answer_headers["mcp-session-id"]
            headers["mcp-protocol-version"] = "2025-11-25"
            ready = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
            await connection.request("POST", "/mcp", headers, ready)
        else:
            headers.update({"mcp-protocol-version": MODERN, "mcp-method": "tools/call"})
            envelope = {
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": MODERN,
                    "io.modelcontextprotocol/clientCapabilities": {},
                }
            }
        for i in range(calls):
            name, arguments = CALLS[i % len(CALLS)]
            params = {"name": name, "arguments": arguments, **envelope}
            if era != "legacy":
                headers["mcp-name"] = name
            call = json.dumps({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": params}).encode()
            started = time.perf_counter()
            status, _, body = await connection.request("POST", "/mcp", headers, call)
            latencies.append(time.perf_counter() - started)
            text = body.decode()
            payload = json.loads(text.split("data: ", 1)[1]) if text.startswith("event:") else json.loads(text)
            if status != 200 or "error" in payload or payload["result"].get("isError"):
                errors.append(f"{name}: HTTP {status} {text[:120]}")
        if "mcp-session-id" in headers:
            await connection.request("DELETE", "/mcp", headers)
    except Exception as exc:  # a benchmark counts failures, it does not stop at the first
        errors.append(f"session: {type(exc).__name__}: {exc}"[:200])
    finally:
        connection.close()


async def sdk_session(url: str, token: str, calls: int, latencies: list[float], errors: list[str]) -> None:
    try:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            for i in range(calls):
                name, arguments = CALLS[i % len(CALLS)]
                started = time.perf_counter()
                result = await client.call_tool(name, arguments)
                latencies.append(time.perf_counter() - started)
                if result.is_error:
                    errors.append(f"{name}: tool error")
    except Exception as exc:  # a benchmark counts failures, it does not stop at the first
        errors.append(f"session: {type(exc).__name__}: {exc}"[:200])


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """redis-server on a free loopback port, without persistence (Debian's package: apt-get install redis-server)."""
    port = free_port()
    binary = shutil.which("redis-server") or "redis-server"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        ping = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False)
        if ping.stdout.strip() == "PONG":
            break
        time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


async def run(
    sessions: int,
    calls: int,
    client: str,
    era: str,
    workers: int,
    stateless: bool,
    replicas: int = 0,
    floor: bool = False,
) -> dict[str, Any]:
    """One run. ``replicas`` > 0: that many stateless servers on ports of their own sharing one Redis and one
    secret, the sessions spread over them in turn (as a load balancer would). ``floor``: the bare MCPServer
    instead of opt-mcp."""
    tokens = {f"person{i}": secrets.token_urlsafe(32) for i in range(PEOPLE)}
    with tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False) as handle:
        handle.write("".join(f"{name}:{token}\n" for name, token in tokens.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIMIZELY_", "OPT_MCP_"))}
    env.update(
        {"OPT_MCP_AUTH_TOKENS_FILE": handle.name, "OPT_MCP_SANDBOX_UNLIMITED": "true", "OPT_MCP_MAX_IN_FLIGHT": "16"}
    )
    command = shutil.which("opt-mcp", path=str(Path(sys.executable).parent)) or "opt-mcp"
    workers_flags = (
        ["--stateless", "--workers", str(workers)] if workers > 1 else (["--stateless"] if stateless else [])
    )
    redis = None
    if replicas:
        redis, redis_url = start_redis()
        env.update({"OPT_MCP_REDIS_URL": redis_url, "OPT_MCP_SECRET": secrets.token_urlsafe(32)})
        workers_flags = ["--stateless"]
    ports = [free_port() for _ in range(max(1, replicas))]
    servers = [
        subprocess.Popen(  # noqa: ASYNC220 - started once, before the measured part
            [sys.executable, "-c", FLOOR_SERVER, str(port)]
            if floor
            else [command, "serve", "--transport", "http", "--port", str(port), *workers_flags],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        async with httpx.AsyncClient() as probe:
            for port in ports:
                for _ in range(300):
                    try:
                        await probe.get(f"http://127.0.0.1:{port}/healthz")  # any answer: it is listening
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
        measured = [server.pid for server in servers] + ([redis.pid] if redis else [])
        idle = [memory_kib(pid) for pid in measured]
        cpu_before, own_before = sum(cpu_seconds(pid) for pid in measured), time.process_time()
        latencies: list[float] = []
        errors: list[str] = []
        people = list(tokens.values())
        started = time.perf_counter()
        if client == "raw":
            runs = [
                raw_session(ports[i % len(ports)], people[i % PEOPLE], calls, era, latencies, errors)
                for i in range(sessions)
            ]
        else:
            runs = [
                sdk_session(
                    f"http://127.0.0.1:{ports[i % len(ports)]}/mcp", people[i % PEOPLE], calls, latencies, errors
                )
                for i in range(sessions)
            ]
        await asyncio.gather(*runs)
        elapsed = time.perf_counter() - started
        loaded = [memory_kib(pid) for pid in measured]
        server_cpu = sum(cpu_seconds(pid) for pid in measured) - cpu_before
        client_cpu = time.process_time() - own_before
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=30)
        os.unlink(handle.name)
    idle_total = {key: sum(m[key] for m in idle) for key in ("VmRSS", "VmHWM")}
    loaded_total = {key: sum(m[key] for m in loaded) for key in ("VmRSS", "VmHWM")}
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1) if ordered else float("nan")

    return {
        "server": "bare MCPServer (floor)" if floor else "opt-mcp",
        "client": client,
        "era": era if client == "raw" else "auto",
        "workers": workers,
        "replicas": replicas,
        "stateless": stateless or workers > 1 or replicas > 0,
        "sessions": sessions,
        "calls_per_session": calls,
        "people": PEOPLE,
        "calls": len(latencies),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "seconds": round(elapsed, 2),
        "calls_per_second": round(len(latencies) / elapsed, 1),
        "latency_ms": {
            "p50": percentile(0.50),
            "p90": percentile(0.90),
            "p99": percentile(0.99),
            "max": percentile(1.0),
            "mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
        },
        "server_memory_mib": {
            "idle_rss": round(idle_total["VmRSS"] / 1024, 1),
            "loaded_rss": round(loaded_total["VmRSS"] / 1024, 1),
            "peak_rss": round(loaded_total["VmHWM"] / 1024, 1),
        },
        "cpu_seconds": {"server": round(server_cpu, 2), "load_generator": round(client_cpu, 2)},
        "server_cpu_ms_per_call": round(server_cpu / max(1, len(latencies)) * 1000, 2),
        "cpus": os.cpu_count(),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repetitions (and each run as measured): one run on a shared machine is noise."""

    def median(*path: str) -> float:
        values: list[float] = []
        for run_ in runs:
            value: Any = run_
            for key in path:
                value = value[key]
            values.append(value)
        return round(statistics.median(values), 2)

    first = runs[0]
    return {
        **{
            k: first[k]
            for k in (
                "server",
                "client",
                "era",
                "workers",
                "replicas",
                "stateless",
                "sessions",
                "calls_per_session",
                "people",
            )
        },
        "cpus": first["cpus"],
        "repetitions": len(runs),
        "errors": sum(r["errors"] for r in runs),
        "median": {
            "calls_per_second": median("calls_per_second"),
            "p50_ms": median("latency_ms", "p50"),
            "p90_ms": median("latency_ms", "p90"),
            "p99_ms": median("latency_ms", "p99"),
            "server_cpu_ms_per_call": median("server_cpu_ms_per_call"),
            "server_rss_mib_loaded": median("server_memory_mib", "loaded_rss"),
            "server_rss_mib_idle": median("server_memory_mib", "idle_rss"),
        },
        "p99_ms_range": [min(r["latency_ms"]["p99"] for r in runs), max(r["latency_ms"]["p99"] for r in runs)],
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument(
        "--client",
        choices=["raw", "sdk"],
        default="raw",
        help="raw: JSON-RPC over h11 (cheap, measures the server); sdk: one mcp.Client per session (costly)",
    )
    parser.add_argument(
        "--era", choices=["legacy", MODERN], default="legacy", help="raw client: the protocol era it speaks"
    )
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (more than 1: stateless)")
    parser.add_argument("--stateless", action="store_true", help="serve without sessions")
    parser.add_argument(
        "--replicas", type=int, default=0, help="N stateless servers sharing one Redis (redis-server must be installed)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs, each against a fresh server; medians reported")
    parser.add_argument(
        "--floor", action="store_true", help="a bare MCPServer whose tools do nothing, served the same way, instead"
    )
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        runs.append(
            asyncio.run(
                run(
                    args.sessions,
                    args.calls,
                    args.client,
                    args.era,
                    args.workers,
                    args.stateless,
                    args.replicas,
                    args.floor,
                )
            )
        )
        for sample in runs[-1]["error_samples"]:
            print(f"  error: {sample}")
    report = summarise(runs)
    m = report["median"]
    print(
        f"[{report['server']}, {report['client']} client, {report['era']}, "
        f"{f'{args.replicas} replicas + Redis' if args.replicas else f'{args.workers} server process(es)'}] "
        f"{report['sessions']} sessions x {report['calls_per_session']} calls ({report['people']} people), "
        f"{report['cpus']} CPUs, median of {report['repetitions']} runs: {m['calls_per_second']} calls/s, "
        f"p50 {m['p50_ms']} ms, p90 {m['p90_ms']} ms, p99 {m['p99_ms']} ms (p99 range {report['p99_ms_range']}), "
        f"errors {report['errors']}; server {m['server_cpu_ms_per_call']} ms CPU a call, "
        f"RSS {m['server_rss_mib_idle']} MiB idle, {m['server_rss_mib_loaded']} MiB loaded"
    )
    shape = ("floor-" if args.floor else "") + (f"{args.replicas}r" if args.replicas else f"{args.workers}w")
    written = Path(str(RESULTS).format(client=args.client, era=report["era"], shape=shape))
    written.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
