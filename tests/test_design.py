"""Performance decisions that are easy to undo by accident, each kept by a check (docs/design.md lists them with the
benchmark that measured each). The figures are the benchmarks' business; these only keep the shape."""

from __future__ import annotations

import ast
import gc
import inspect
from abc import ABC
from pathlib import Path

import pytest

from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.config import Settings
from opt_mcp.hosting import HostedSettings, build_app
from opt_mcp.people import People
from opt_mcp.runtime import Runtimes
from opt_mcp.sandbox import Sandbox, SandboxConfig, SandboxLimits
from tests.conftest import FAST_RETRY

PACKAGE = Path(__file__).parent.parent / "opt_mcp"
# Modules whose functions the SDK registers (tools, prompts, resources): it reads their type hints several times.
REGISTERED = [*sorted((PACKAGE / "tools").glob("*.py")), PACKAGE / "prompts.py", PACKAGE / "resources.py"]


def _future_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "__future__"
        for alias in node.names
    }


@pytest.mark.parametrize("path", REGISTERED, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_registered_modules_do_without_string_annotations(path: Path) -> None:
    """``from __future__ import annotations`` makes every hint a string the SDK evaluates again and again: about
    10 ms of every start-up (bench/run.py, cold start)."""
    assert "annotations" not in _future_imports(path)


def test_no_module_sends_through_httpx_asgi_transport() -> None:
    """httpx's ASGITransport looks for trio through a failed import on every request (about 4 % of a hosted
    server's CPU, bench/load.py): the sandbox has its own in-process transport."""
    users = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute | ast.ImportFrom) and _names_asgi_transport(node)
    ]
    assert users == []


def _names_asgi_transport(node: ast.Attribute | ast.ImportFrom) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "ASGITransport"
    return any(alias.name == "ASGITransport" for alias in node.names)


def test_runtimes_is_a_base_class_not_a_protocol() -> None:
    """Every hosted tool call asks which Runtime is the caller's: a runtime-checkable Protocol's isinstance inspects
    attributes each time (2 % of a hosted server's CPU, bench/load.py)."""
    assert ABC in Runtimes.__mro__
    assert not getattr(Runtimes, "_is_protocol", False)
    assert issubclass(People, Runtimes)
    assert inspect.isabstract(Runtimes)


@pytest.mark.anyio
async def test_the_hosted_heap_is_frozen_once_started() -> None:
    """What is alive after start-up leaves the collector's sight (bench/load.py: about 6 % more calls a second)."""
    app = build_app(
        Settings(secret=b"s" * 32),
        HostedSettings(no_auth=True),
        sandbox=Sandbox(SandboxConfig(rate_limits=SandboxLimits.unlimited())),
        rate_limits=RateLimits.unlimited(),
        retry=FAST_RETRY,
    )
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 0


def test_the_design_page_names_every_module() -> None:
    """docs/design.md has one row per module: a module added without one fails here, naming it."""
    page = (PACKAGE.parent / "docs" / "design.md").read_text(encoding="utf-8")
    modules = sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py"))
    assert [m for m in modules if f"| `{m}` |" not in page] == []
