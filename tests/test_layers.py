"""The layers of opt-mcp point one way, and what each states on its own so that none imports another's.

At the bottom: the settings registry (a leaf), ``opt_mcp.config`` (the registry, plus the settings of the API and of
the sandbox) and the API client (``opt_mcp.api``, which knows no application module: the server hands it a request
hook and a shared budget). Beside it, independent of it: the sandbox, Optimizely's side of the contract, which
states the published limits and the spec's constants itself. ``opt_mcp.sandboxed``, above both, joins them.

Every import counts: at the top of a module, inside a function (a lazy import is still a dependency) and under
``TYPE_CHECKING`` (a type from a layer above, in a signature below, couples the two just the same; no module needs
one today).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from opt_mcp.api import client, models, oauth
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.sandbox import config as sandbox_config
from opt_mcp.sandbox import results as sandbox_results
from opt_mcp.sandbox.limits import SandboxLimits
from opt_mcp.sandboxed import pacing_for
from opt_mcp.settings import BASE_URL, TOKEN_URL

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "opt_mcp"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: the module it loads, and the names it takes from it."""

    target: str
    names: tuple[str, ...]
    line: int
    where: str  # "", " (inside a function)" or " (under TYPE_CHECKING)"


@dataclass(frozen=True)
class Rule:
    says: str
    applies: Callable[[str], bool]
    allows: Callable[[Import], bool]


RULES = (
    Rule(
        "the settings registry is a leaf: it imports nothing of opt_mcp",
        lambda module: module == "opt_mcp.settings",
        lambda _: False,
    ),
    Rule(
        "config sits at the bottom: it imports only the settings registry, the API's OAuth credentials and the "
        "sandbox's settings",
        lambda module: module == "opt_mcp.config",
        lambda found: found.target in ("opt_mcp.settings", "opt_mcp.api.oauth", "opt_mcp.sandbox.config"),
    ),
    Rule(
        "the API client imports nothing of opt_mcp outside opt_mcp.api but opt_mcp.__version__ (its User-Agent); "
        "the application reaches it through hooks (on_request, SharedBudget)",
        lambda module: within(module, "opt_mcp.api"),
        lambda found: (
            within(found.target, "opt_mcp.api") or (found.target, found.names) == ("opt_mcp", ("__version__",))
        ),
    ),
    Rule(
        "the sandbox is independent of the client and the application: it imports only opt_mcp.sandbox and the "
        "settings registry (opt_mcp.sandboxed joins it to the client)",
        lambda module: within(module, "opt_mcp.sandbox"),
        lambda found: within(found.target, "opt_mcp.sandbox") or found.target == "opt_mcp.settings",
    ),
)


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(module: str, source: str) -> Iterator[Import]:
    """Every opt_mcp module ``source`` imports, wherever the import stands."""
    is_package = (ROOT.joinpath(*module.split(".")) / "__init__.py").is_file()
    package = module if is_package else module.rpartition(".")[0]  # what a relative import starts from

    def visit(node: ast.AST, where: str) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                inner = where or " (inside a function)"
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for statement in child.body:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), " (under TYPE_CHECKING)")
                for statement in child.orelse:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), where)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(alias.name, (), child.lineno, where)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolved against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = tuple(alias.name for alias in child.names)
                # ``from opt_mcp import render`` imports the module opt_mcp.render; ``from opt_mcp import
                # __version__`` takes a name of opt_mcp itself.
                submodules = [name for name in names if _is_module(f"{base}.{name}")]
                for name in submodules:
                    yield Import(f"{base}.{name}", (), child.lineno, where)
                if len(submodules) < len(names):
                    yield Import(base, tuple(n for n in names if n not in submodules), child.lineno, where)
            yield from visit(child, inner)

    for found in visit(ast.parse(source), ""):
        if within(found.target, "opt_mcp"):
            yield found


def violations(module: str, source: str, path: str) -> list[str]:
    broken = []
    for rule in RULES:
        if rule.applies(module):
            for found in imports_of(module, source):
                if not rule.allows(found):
                    taken = f" ({', '.join(found.names)})" if found.names else ""
                    broken.append(f"{path}:{found.line} imports {found.target}{taken}{found.where}: {rule.says}")
    return broken


def test_the_layers_point_one_way() -> None:
    broken = [
        message
        for path in sorted(PACKAGE.rglob("*.py"))
        for message in violations(module_of(path), path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert not broken, "\n".join(broken)


def test_every_rule_applies_to_modules_that_exist() -> None:
    modules = [module_of(path) for path in PACKAGE.rglob("*.py")]
    assert all(any(rule.applies(module) for module in modules) for rule in RULES)


@pytest.mark.parametrize(
    ("module", "source", "named"),
    [
        ("opt_mcp.api.client", "def send():\n    from opt_mcp.calls import note_api_call\n", "inside a function"),
        ("opt_mcp.api.ratelimit", "if TYPE_CHECKING:\n    from opt_mcp.shared import Store\n", "TYPE_CHECKING"),
        ("opt_mcp.api.client", "from opt_mcp import __version__, logs\n", "opt_mcp.logs"),
        ("opt_mcp.api.client", "from opt_mcp import budget as b\n", "opt_mcp.budget"),
        ("opt_mcp.sandbox.gateway", "from ..api.ratelimit import Window\n", "opt_mcp.api.ratelimit"),
        ("opt_mcp.sandbox.app", "import opt_mcp.sandboxed\n", "opt_mcp.sandboxed"),
        ("opt_mcp.config", "from opt_mcp.guard import ConfirmMode\n", "config sits at the bottom"),
        ("opt_mcp.settings", "from opt_mcp import __version__\n", "a leaf"),
    ],
)
def test_a_broken_rule_is_named_with_the_import_that_breaks_it(module: str, source: str, named: str) -> None:
    (message,) = violations(module, source, "here.py")
    assert named in message and message.startswith("here.py:")


def test_what_each_layer_loads_stays_in_its_layer() -> None:
    """The rules, as the interpreter sees them: importing each bottom module loads nothing above it."""
    loads: dict[str, Callable[[set[str]], bool]] = {
        "opt_mcp.config": lambda loaded: (
            loaded
            <= {
                "opt_mcp",
                "opt_mcp.config",
                "opt_mcp.settings",
                "opt_mcp.api",
                "opt_mcp.api.oauth",
                "opt_mcp.sandbox",
                "opt_mcp.sandbox.config",
                "opt_mcp.sandbox.limits",
            }
        ),
        "opt_mcp.api.client": lambda loaded: all(within(m, "opt_mcp.api") or m == "opt_mcp" for m in loaded),
        "opt_mcp.sandbox.app": lambda loaded: all(
            within(m, "opt_mcp.sandbox") or m in ("opt_mcp", "opt_mcp.settings") for m in loaded
        ),
    }
    for module, fits in loads.items():
        script = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('opt_mcp')))"
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
        loaded = set(done.stdout.split())
        assert fits(loaded), f"importing {module} loads {sorted(loaded)}"


# ------------------------------------------------------------------------------------------------------------------
# Stated on both sides
# ------------------------------------------------------------------------------------------------------------------


def test_the_client_paces_to_the_limits_the_sandbox_enforces() -> None:
    assert pacing_for(SandboxLimits()) == RateLimits()
    assert pacing_for(SandboxLimits.unlimited()) == RateLimits.unlimited()


def test_the_settings_defaults_are_the_clients_defaults() -> None:
    """The registry, a leaf, states Optimizely's origins as the settings' defaults; the client states them as its
    own (it is used without settings too)."""
    assert BASE_URL.default == client.DEFAULT_BASE_URL
    assert TOKEN_URL.default == oauth.DEFAULT_TOKEN_URL


def test_the_sandbox_and_the_client_agree_on_the_specs_constants() -> None:
    assert sandbox_results.NOT_AVAILABLE_INT64 == models.NOT_AVAILABLE_INT64 == 2**63 - 1
    assert sandbox_config.ACCESS_TOKEN_LIFETIME == oauth.ACCESS_TOKEN_LIFETIME
