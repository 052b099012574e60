"""The server's settings, from environment variables (declared in ``opt_mcp.settings``) and command-line flags,
with the rules that join several of them. A bad setting is one clear line, never a trace."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from opt_mcp.api.oauth import OAuthCredentials
from opt_mcp.sandbox.config import SEED_PROJECT_ID, SandboxConfig
from opt_mcp.settings import (
    API_TOKEN,
    AUDIT_LOG,
    BASE_URL,
    CONFIRM,
    CONFIRM_TTL,
    HARD_CEILING,
    LEDGER_FILE,
    MAX_TOKENS,
    MIN_MAX_TOKENS,
    OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET,
    PROJECT_ID,
    READ_ONLY,
    REDIS_URL,
    REFRESH_TOKEN,
    RESULTS_CACHE_SECONDS,
    SANDBOX,
    SECRET,
    TOKEN_URL,
    ConfigError,
    ConfirmMode,
)


def new_secret() -> bytes:
    """A signing key for confirmation tokens, when OPT_MCP_SECRET gives none (valid in this process only)."""
    return secrets.token_bytes(32)


@dataclass(frozen=True)
class Settings:
    """What the server runs with. ``token`` is never shown in a repr, nor are ``oauth``'s secrets."""

    token: str | None = field(default=None, repr=False)
    # OPTIMIZELY_REFRESH_TOKEN and the OAuth app's credentials: the access token is refreshed when it expires (and
    # fetched on first use when no OPTIMIZELY_API_TOKEN is set).
    oauth: OAuthCredentials | None = None
    base_url: str = BASE_URL.default
    project_id: int | None = None
    read_only: bool = False
    force_sandbox: bool = False
    # OPT_MCP_SANDBOX=false: never the sandbox, even without OPTIMIZELY_API_TOKEN (hosted: each person brings one).
    real_api: bool = False
    max_tokens: int = MAX_TOKENS.default
    confirm: ConfirmMode = CONFIRM.default
    secret: bytes = field(default_factory=new_secret, repr=False)
    audit_log: str | None = None
    # An SQLite file of used confirmation tokens, shared by the worker processes of one host (OPT_MCP_LEDGER_FILE).
    ledger_file: str | None = None
    # Redis, for replicas that share the ledger, rate-limit budgets, caches and the audit stream (OPT_MCP_REDIS_URL).
    redis_url: str | None = field(default=None, repr=False)
    token_ttl: float = CONFIRM_TTL.default
    results_cache_seconds: float = RESULTS_CACHE_SECONDS.default
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)

    def __post_init__(self) -> None:
        if self.force_sandbox and self.real_api:
            raise ConfigError("the sandbox cannot be both forced and refused: drop --sandbox or OPT_MCP_SANDBOX=false")
        if not MIN_MAX_TOKENS <= self.max_tokens <= HARD_CEILING:
            raise ConfigError(f"max_tokens must be between {MIN_MAX_TOKENS} and {HARD_CEILING}")

    @property
    def has_token(self) -> bool:
        """An access token is set, or a refresh token that fetches one."""
        return bool(self.token) or self.oauth is not None

    @property
    def uses_sandbox(self) -> bool:
        """The sandbox runs when forced, and whenever no token is set (unless refused with OPT_MCP_SANDBOX=false)."""
        return self.force_sandbox or (not self.has_token and not self.real_api)

    @property
    def default_project_id(self) -> int | None:
        if self.project_id is not None:
            return self.project_id
        return SEED_PROJECT_ID if self.uses_sandbox else None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] = os.environ,
        *,
        read_only: bool | None = None,
        sandbox: bool | None = None,
    ) -> Settings:
        """Read the environment; command-line flags (when given) win over it (and their variable is not read)."""
        said_sandbox = SANDBOX.read(environ) if sandbox is None else None  # True, False, or None: unset
        return cls(
            token=API_TOKEN.read(environ),
            oauth=_oauth(environ),
            base_url=BASE_URL.read(environ).rstrip("/"),
            project_id=PROJECT_ID.read(environ),
            read_only=READ_ONLY.read(environ) if read_only is None else read_only,
            force_sandbox=said_sandbox is True if sandbox is None else sandbox,
            real_api=said_sandbox is False,
            max_tokens=MAX_TOKENS.read(environ),
            confirm=CONFIRM.read(environ),
            secret=SECRET.read(environ) or new_secret(),
            audit_log=AUDIT_LOG.read(environ),
            ledger_file=LEDGER_FILE.read(environ),
            redis_url=REDIS_URL.read(environ),
            token_ttl=float(CONFIRM_TTL.read(environ)),
            results_cache_seconds=float(RESULTS_CACHE_SECONDS.read(environ)),
            sandbox=SandboxConfig.from_env(environ),
        )


def _oauth(environ: Mapping[str, str]) -> OAuthCredentials | None:
    """The refresh token and the OAuth app it belongs to: all of them or none (half is a mistake, said so)."""
    refresh_token = REFRESH_TOKEN.read(environ)
    app = (OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET)
    if refresh_token is None:
        given = [setting.name for setting in (*app, TOKEN_URL) if setting.given(environ)]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} set without OPTIMIZELY_REFRESH_TOKEN: set the refresh token your OAuth app "
                f"was authorised with, or unset {'them' if len(given) > 1 else 'it'}"
            )
        return None
    missing = [setting.name for setting in app if not setting.given(environ)]
    if missing:
        raise ConfigError(
            f"OPTIMIZELY_REFRESH_TOKEN needs {' and '.join(missing)} (your OAuth app's credentials, in its settings "
            "in Optimizely) to refresh with: set them, or unset OPTIMIZELY_REFRESH_TOKEN"
        )
    return OAuthCredentials(
        refresh_token=refresh_token,
        client_id=OAUTH_CLIENT_ID.read(environ),
        client_secret=OAUTH_CLIENT_SECRET.read(environ),
        token_url=TOKEN_URL.read(environ),
    )
