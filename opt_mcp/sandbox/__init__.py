"""The embedded sandbox: Optimizely's Flags API v1 and the v2 endpoints opt-mcp uses, simulated in process.

It is what runs when no token is set, what every test runs against, and ``opt-mcp sandbox --port N`` serves it on
127.0.0.1. Faults can be injected per path and every request is logged, so a test can prove what reached the API.

Its settings load with this package; the sandbox itself (its app, data and HTTP transport) loads when first used,
so that a server answers ``tools/list`` before it has paid for a simulation it may never call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opt_mcp.sandbox.config import (
    SANDBOX_ORIGIN,
    SANDBOX_TOKEN,
    SANDBOX_TOKEN_URL,
    SEED_PROJECT_ID,
    Readings,
    SandboxConfig,
    SandboxOAuth,
)
from opt_mcp.sandbox.limits import Limit, SandboxLimits

if TYPE_CHECKING:
    from opt_mcp.sandbox.app import Sandbox, serve
    from opt_mcp.sandbox.faults import Fault, RequestRecord

__all__ = [
    "SANDBOX_ORIGIN",
    "SANDBOX_TOKEN",
    "SANDBOX_TOKEN_URL",
    "SEED_PROJECT_ID",
    "Fault",
    "Limit",
    "Readings",
    "RequestRecord",
    "Sandbox",
    "SandboxConfig",
    "SandboxLimits",
    "SandboxOAuth",
    "serve",
]
_LATER = {"Sandbox": "app", "serve": "app", "Fault": "faults", "RequestRecord": "faults"}


def __getattr__(name: str) -> Any:
    # PEP 562: the heavy parts are imported the first time one of them is asked for.
    if name in _LATER:
        import importlib

        return getattr(importlib.import_module(f"opt_mcp.sandbox.{_LATER[name]}"), name)
    raise AttributeError(f"module 'opt_mcp.sandbox' has no attribute {name!r}")
