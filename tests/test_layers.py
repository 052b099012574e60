"""The layers of opt-mcp, and what each states on its own so that none imports another's.

The sandbox is Optimizely's side of the contract: it states the published limits and the spec's constants itself,
and these tests hold each statement equal to the client's, so a wrong one on either side fails here instead of
being mirrored into the other.
"""

from __future__ import annotations

from opt_mcp.api import models, oauth
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.sandbox import config as sandbox_config
from opt_mcp.sandbox import results as sandbox_results
from opt_mcp.sandbox.limits import SandboxLimits
from opt_mcp.sandboxed import pacing_for

# ------------------------------------------------------------------------------------------------------------------
# Stated on both sides
# ------------------------------------------------------------------------------------------------------------------


def test_the_client_paces_to_the_limits_the_sandbox_enforces() -> None:
    assert pacing_for(SandboxLimits()) == RateLimits()
    assert pacing_for(SandboxLimits.unlimited()) == RateLimits.unlimited()


def test_the_sandbox_and_the_client_agree_on_the_specs_constants() -> None:
    assert sandbox_results.NOT_AVAILABLE_INT64 == models.NOT_AVAILABLE_INT64 == 2**63 - 1
    assert sandbox_config.ACCESS_TOKEN_LIFETIME == oauth.ACCESS_TOKEN_LIFETIME
