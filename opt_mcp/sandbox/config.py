"""The sandbox's settings and names: all that start-up needs of it (the sandbox itself is built on first use)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from opt_mcp.sandbox.limits import SandboxLimits
from opt_mcp.settings import SANDBOX_FLAGS, SANDBOX_SEED, SANDBOX_UNLIMITED

# The seed documents' project (shared/seeds/004_…): the default project of the sandbox.
SEED_PROJECT_ID = 5629661695180800
# A name that can never resolve (RFC 2606), so nothing meant for the sandbox can leave the process.
SANDBOX_ORIGIN = "http://sandbox.opt-mcp.invalid"
# What the server uses for the sandbox when nobody brings a token of their own (not a secret: the sandbox is local).
SANDBOX_TOKEN = "sandbox-token"  # noqa: S105
# Where the sandbox's OAuth token endpoint answers (Optimizely's is https://app.optimizely.com/oauth2/token).
SANDBOX_TOKEN_URL = f"{SANDBOX_ORIGIN}/oauth2/token"
# An access token's lifetime in seconds: ``expires_in: 7200`` in the answers of Optimizely's authorization-code and
# refresh-token docs. Stated here as the sandbox's own (the client states it too; a test holds the two equal).
ACCESS_TOKEN_LIFETIME = 7200


@dataclass(frozen=True)
class Readings:
    """How the sandbox answers where Optimizely's specs and docs leave the behaviour open.

    Each default is the conservative reading (docs/sandbox.md says where each comes from); tests switch to the
    other reading to prove that opt-mcp gives the right answer under both.
    """

    # A flags list without ``archived``: only unarchived flags (as the app's list shows them), or every flag.
    archived_default: Literal["unarchived", "all"] = "unarchived"
    # ``key_list``: honoured, or ignored as an unknown parameter would be (the list is then unfiltered).
    key_list: Literal["honoured", "ignored"] = "honoured"
    # ``enabled=``/``rule_type=`` with ``environment=``: judged in those environments only, or in any environment.
    environment_scoping: Literal["scoped", "any"] = "scoped"
    # Enable/disable a ruleset: 200 with the ruleset (the spec), or 204 without a body (Optimizely's own client).
    toggle_answer: Literal["ruleset", "no_content"] = "ruleset"
    # A flag PATCH of several operations: the revision moves by one per request, or by one per operation.
    revision_step: Literal["request", "operation"] = "request"
    # A rule's ``audience_conditions``: an array always, or the spec's string form (``"everyone"``, a JSON string).
    audience_conditions: Literal["array", "string"] = "array"
    # The 401 to an expired access token: the same body as any refused token's, or one that says it expired.
    expiry_body: Literal["silent", "says_expired"] = "silent"
    # A refresh's answer: a new refresh token (the one used is refused from then on), or none (it stays valid, as
    # in the example answer of Optimizely's refresh-token docs).
    refresh_rotation: Literal["rotates", "keeps"] = "rotates"


@dataclass(frozen=True)
class SandboxOAuth:
    """An OAuth app and one authorisation of it: with this, the sandbox accepts only the access tokens it issued (and
    ``token`` and ``grants``), each until it expires on the sandbox's clock.

    ``access_token`` is the token a session starts with (None: it starts with the refresh token alone), valid for
    ``access_token_lifetime`` seconds from the sandbox's creation; each refresh issues one that lasts ``lifetime``.
    """

    client_id: str = "sandbox-oauth-client"
    client_secret: str = field(default="sandbox-oauth-client-secret", repr=False)
    refresh_token: str = field(default="sandbox-refresh-token", repr=False)
    access_token: str | None = field(default=None, repr=False)
    access_token_lifetime: float = ACCESS_TOKEN_LIFETIME
    lifetime: int = ACCESS_TOKEN_LIFETIME


@dataclass(frozen=True)
class SandboxConfig:
    """The sandbox's knobs. ``flags`` generated flags are added to the seed project, deterministic from ``seed``."""

    flags: int = SANDBOX_FLAGS.default
    seed: int = SANDBOX_SEED.default
    environments: int = 2
    max_rules: int = 4
    token: str | None = None
    # Personal tokens and the projects each may see (a token not listed sees every project).
    grants: Mapping[str, frozenset[int]] = field(default_factory=dict)
    rate_limits: SandboxLimits = field(default_factory=SandboxLimits)
    reset_style: Literal["epoch", "seconds"] = "epoch"
    readings: Readings = field(default_factory=Readings)
    # The OAuth app whose access tokens expire (None: any refresh is granted, and only issued tokens expire).
    oauth: SandboxOAuth | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> SandboxConfig:
        """Read ``OPT_MCP_SANDBOX_FLAGS``, ``OPT_MCP_SANDBOX_SEED`` and ``OPT_MCP_SANDBOX_UNLIMITED`` (no rate
        limits, for load tests); ``overrides`` (command-line flags) win. A malformed value raises ConfigError."""
        values: dict[str, Any] = {"flags": SANDBOX_FLAGS.read(environ), "seed": SANDBOX_SEED.read(environ)}
        if SANDBOX_UNLIMITED.read(environ):
            values["rate_limits"] = SandboxLimits.unlimited()
        values.update(overrides)
        return cls(**values)
