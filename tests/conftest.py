"""Shared fixtures: every test runs against the embedded sandbox, never the network."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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
