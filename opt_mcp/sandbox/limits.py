"""Optimizely's published rate limits, as the sandbox enforces them.

Stated here from Optimizely's documentation, not taken from the client's pacing (``opt_mcp.api.ratelimit``): the
sandbox is the other side of the contract, so a wrong limit in the client meets a sandbox that refuses it, and a
test holds the two equal (tests/test_layers.py) instead of one mirroring the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """At most ``requests`` in any ``seconds``-long stretch of time, per token."""

    requests: int
    seconds: float


@dataclass(frozen=True)
class SandboxLimits:
    """What the sandbox allows per token and class of endpoint. A results request counts against ``v2`` too."""

    # Flags (Feature Experimentation) API: "2 requests per second and 120 requests per minute"
    # (docs.developers.optimizely.com, "About the Feature Experimentation APIs").
    flags: tuple[Limit, ...] = (Limit(2, 1.0), Limit(120, 60.0))
    # REST API v2: 100 requests a minute for every endpoint (developers.optimizely.com/x/rest/conventions) ...
    v2: tuple[Limit, ...] = (Limit(100, 60.0),)
    # ... and 20 a minute for /v2/experiments/{id}/results and /v2/campaigns/{id}/results (the same page).
    results: tuple[Limit, ...] = (Limit(20, 60.0),)

    @classmethod
    def unlimited(cls) -> SandboxLimits:
        """No limits (load tests, and tests that are not about pacing)."""
        return cls(flags=(), v2=(), results=())
