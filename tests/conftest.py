"""Shared fixtures: every test runs against the embedded sandbox, never the network.

Also the reliability campaign's tally (tests/reliability): each test adds what it did, and the run ends with one
summary line. Workers of pytest-xdist are separate processes, so each writes its counts to a file in a directory
the controller makes (and names in the environment the workers inherit); the controller adds them up."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opt_mcp.api.client import OptimizelyClient, RetryPolicy
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.sandbox import Sandbox, SandboxConfig, SandboxLimits
from opt_mcp.sandboxed import sandbox_client

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
    return Sandbox(SandboxConfig(rate_limits=SandboxLimits.unlimited()))


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
    async with sandbox_client(
        sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY, sleep=sleeps, clock=sleeps.clock
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
            process.terminate()
            _, said = process.communicate(timeout=10)
            pytest.fail(f"the sandbox did not start: {said.decode(errors='replace')}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


# ------------------------------------------------------------------------------------------------------------------
# The reliability campaign's tally
# ------------------------------------------------------------------------------------------------------------------

_DIRECTORY = "OPT_MCP_RELIABILITY_TALLY"
KEYS = ("calls", "faults injected", "writes attempted", "writes confirmed", "writes refused", "duplicates", "leaks")


def pytest_configure(config: pytest.Config) -> None:
    if _DIRECTORY not in os.environ:  # the controller (or a run without xdist): workers inherit it
        os.environ[_DIRECTORY] = tempfile.mkdtemp(prefix="opt-mcp-reliability-")


class Tally:
    """Counts for this process; written out when the process ends its session."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, **counts: int) -> None:
        for key, value in counts.items():
            name = key.replace("_", " ")
            assert name in KEYS, name
            self.counts[name] += value


_TALLY = Tally()


@pytest.fixture(scope="session")
def tally() -> Tally:
    return _TALLY


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _TALLY.counts:
        path = Path(os.environ[_DIRECTORY]) / f"{os.getpid()}.json"
        path.write_text(json.dumps(_TALLY.counts))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    total: Counter[str] = Counter()
    for path in Path(os.environ[_DIRECTORY]).glob("*.json"):
        total.update(json.loads(path.read_text()))
    if total:
        line = ", ".join(f"{key} {total[key]}" for key in KEYS)
        terminalreporter.write_sep("=", "reliability campaign")
        terminalreporter.write_line(line)


# ------------------------------------------------------------------------------------------------------------------
# The opt-mcp command in this process
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., Ran]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """``opt-mcp ARGS`` in this process, with no OPTIMIZELY_ or OPT_MCP_ setting but those given; the logging
    ``main`` configures is put back afterwards."""
    from opt_mcp.cli import main

    for name in list(os.environ):
        if name.startswith(("OPTIMIZELY_", "OPT_MCP_")):
            monkeypatch.delenv(name)
    loggers = [logging.getLogger(), logging.getLogger("httpx"), logging.getLogger("mcp")]
    saved = [(logger.handlers[:], logger.level) for logger in loggers]

    def opt_mcp(*args: str, env: dict[str, str] | None = None) -> Ran:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # --version and --help, as argparse ends them
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    yield opt_mcp
    for logger, (handlers, level) in zip(loggers, saved, strict=True):
        logger.handlers[:] = handlers
        logger.setLevel(level)
