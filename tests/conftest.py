"""Shared fixtures: every test runs against the embedded sandbox, never the network."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opt_mcp.api.client import OptimizelyClient, RetryPolicy
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.sandbox import Sandbox, SandboxConfig

DATA = Path(__file__).parent / "data"
# Retries without real waiting: the backoff sleeps are recorded, not slept.
FAST_RETRY = RetryPolicy(attempts=4, backoff_base=0.001, backoff_max=0.002, max_rate_limit_wait=60.0)


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sandbox() -> Sandbox:
    """The seed project (3 flags, 2 environments) with no rate limiting."""
    return Sandbox(SandboxConfig(rate_limits=RateLimits.unlimited()))


class SleepRecorder:
    """Fake time for the client: ``sleep`` records the wait and moves ``clock`` forward at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.now = 1000.0

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now

    @property
    def total(self) -> float:
        return sum(self.calls)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
async def client(sandbox: Sandbox, sleeps: SleepRecorder) -> AsyncIterator[OptimizelyClient]:
    async with sandbox.client(
        rate_limits=RateLimits.unlimited(), retry=FAST_RETRY, sleep=sleeps, clock=sleeps.clock
    ) as c:
        yield c


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served_sandbox() -> Iterator[str]:
    """``opt-mcp sandbox`` in its own process on a loopback port (150 generated flags, seed 3); its base URL."""
    port = free_port()
    env = {**os.environ, "OPT_MCP_SANDBOX_FLAGS": "150"}
    process = subprocess.Popen(
        [sys.executable, "-m", "opt_mcp.cli", "sandbox", "--port", str(port), "--seed", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/_sandbox/requests", timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the sandbox did not start: " + process.stderr.read1().decode() if process.stderr else "")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
