"""Settings, from environment variables and command-line flags. A bad setting is one clear line, never a trace."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from opt_mcp.api.oauth import DEFAULT_TOKEN_URL, OAuthCredentials
from opt_mcp.budget import DEFAULT_MAX_TOKENS, HARD_CEILING, MIN_MAX_TOKENS
from opt_mcp.guard import TOKEN_TTL_SECONDS, ConfirmMode, new_secret
from opt_mcp.sandbox import SEED_PROJECT_ID, SandboxConfig

DEFAULT_BASE_URL = "https://api.optimizely.com"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_SAID_FALSE = _FALSE[:-1]  # set, and false (unset is not a refusal)


class ConfigError(ValueError):
    """A missing or malformed setting; its message names the setting and the fix."""


@dataclass(frozen=True)
class Settings:
    """What the server runs with. ``token`` is never shown in a repr, nor are ``oauth``'s secrets."""

    token: str | None = field(default=None, repr=False)
    # OPTIMIZELY_REFRESH_TOKEN and the OAuth app's credentials: the access token is refreshed when it expires (and
    # fetched on first use when no OPTIMIZELY_API_TOKEN is set).
    oauth: OAuthCredentials | None = None
    base_url: str = DEFAULT_BASE_URL
    project_id: int | None = None
    read_only: bool = False
    force_sandbox: bool = False
    # OPT_MCP_SANDBOX=false: never the sandbox, even without OPTIMIZELY_API_TOKEN (hosted: each person brings one).
    real_api: bool = False
    max_tokens: int = DEFAULT_MAX_TOKENS
    confirm: ConfirmMode = "elicit"
    secret: bytes = field(default_factory=new_secret, repr=False)
    audit_log: str | None = None
    # An SQLite file of used confirmation tokens, shared by the worker processes of one host (OPT_MCP_LEDGER_FILE).
    ledger_file: str | None = None
    # Redis, for replicas that share the ledger, rate-limit budgets, caches and the audit stream (OPT_MCP_REDIS_URL).
    redis_url: str | None = field(default=None, repr=False)
    token_ttl: float = TOKEN_TTL_SECONDS
    results_cache_seconds: float = 60.0
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
        """Read the environment; command-line flags (when given) win over it."""
        token = environ.get("OPTIMIZELY_API_TOKEN", "").strip() or None
        if token is not None and any(c.isspace() for c in token):
            raise ConfigError("OPTIMIZELY_API_TOKEN contains spaces: paste the token alone, without 'Bearer'")
        oauth = _oauth(environ)
        base_url = environ.get("OPTIMIZELY_API_BASE_URL", "").strip() or DEFAULT_BASE_URL
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"OPTIMIZELY_API_BASE_URL must be an http(s) URL like {DEFAULT_BASE_URL}, not {base_url!r}"
            )
        raw_project = environ.get("OPTIMIZELY_PROJECT_ID", "").strip()
        project_id: int | None = None
        if raw_project:
            if not raw_project.isdigit() or int(raw_project) == 0:
                raise ConfigError(f"OPTIMIZELY_PROJECT_ID must be a project's numeric id, not {raw_project!r}")
            project_id = int(raw_project)
        raw_budget = environ.get("OPT_MCP_MAX_TOKENS", "").strip()
        max_tokens = DEFAULT_MAX_TOKENS
        if raw_budget:
            if not raw_budget.isdigit() or not MIN_MAX_TOKENS <= int(raw_budget) <= HARD_CEILING:
                raise ConfigError(
                    f"OPT_MCP_MAX_TOKENS must be a number of tokens from {MIN_MAX_TOKENS} to {HARD_CEILING} "
                    f"(the hard ceiling), not {raw_budget!r}"
                )
            max_tokens = int(raw_budget)
        confirm = environ.get("OPT_MCP_CONFIRM", "").strip().lower() or "elicit"
        if confirm not in ("elicit", "token", "production-only"):
            raise ConfigError(f"OPT_MCP_CONFIRM must be elicit, token or production-only, not {confirm!r}")
        raw_secret = environ.get("OPT_MCP_SECRET", "")
        if raw_secret and len(raw_secret.encode()) < 32:
            raise ConfigError("OPT_MCP_SECRET must be at least 32 characters (it signs confirmation tokens)")
        raw_ttl = environ.get("OPT_MCP_CONFIRM_TTL", "").strip()
        if raw_ttl and (not raw_ttl.isdigit() or not 10 <= int(raw_ttl) <= 3600):
            raise ConfigError(f"OPT_MCP_CONFIRM_TTL must be a number of seconds from 10 to 3600, not {raw_ttl!r}")
        raw_cache = environ.get("OPT_MCP_RESULTS_CACHE_SECONDS", "").strip()
        if raw_cache and (not raw_cache.isdigit() or int(raw_cache) > 3600):
            raise ConfigError(f"OPT_MCP_RESULTS_CACHE_SECONDS must be 0 to 3600 seconds, not {raw_cache!r}")
        redis_url = environ.get("OPT_MCP_REDIS_URL", "").strip() or None
        if redis_url and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                "OPT_MCP_REDIS_URL must be a redis://, rediss:// or unix:// URL, e.g. redis://redis:6379/0"
            )
        try:
            sandbox_config = SandboxConfig.from_env(environ)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            token=token,
            oauth=oauth,
            base_url=base_url.rstrip("/"),
            project_id=project_id,
            read_only=parse_flag(environ, "OPT_MCP_READ_ONLY") if read_only is None else read_only,
            force_sandbox=parse_flag(environ, "OPT_MCP_SANDBOX") if sandbox is None else sandbox,
            real_api=sandbox is None and environ.get("OPT_MCP_SANDBOX", "").strip().lower() in _SAID_FALSE,
            max_tokens=max_tokens,
            confirm=confirm,  # type: ignore[arg-type]
            secret=raw_secret.encode() if raw_secret else new_secret(),
            audit_log=environ.get("OPT_MCP_AUDIT_LOG", "").strip() or None,
            ledger_file=environ.get("OPT_MCP_LEDGER_FILE", "").strip() or None,
            redis_url=redis_url,
            token_ttl=float(raw_ttl) if raw_ttl else TOKEN_TTL_SECONDS,
            results_cache_seconds=float(raw_cache) if raw_cache else 60.0,
            sandbox=sandbox_config,
        )


def _oauth(environ: Mapping[str, str]) -> OAuthCredentials | None:
    """The refresh token and the OAuth app it belongs to: all of them or none (half is a mistake, said so)."""
    refresh_token = environ.get("OPTIMIZELY_REFRESH_TOKEN", "").strip()
    values = {
        "OPTIMIZELY_OAUTH_CLIENT_ID": environ.get("OPTIMIZELY_OAUTH_CLIENT_ID", "").strip(),
        "OPTIMIZELY_OAUTH_CLIENT_SECRET": environ.get("OPTIMIZELY_OAUTH_CLIENT_SECRET", "").strip(),
        "OPTIMIZELY_OAUTH_TOKEN_URL": environ.get("OPTIMIZELY_OAUTH_TOKEN_URL", "").strip(),
    }
    if not refresh_token:
        given = [name for name, value in values.items() if value]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} set without OPTIMIZELY_REFRESH_TOKEN: set the refresh token your OAuth app "
                f"was authorised with, or unset {'them' if len(given) > 1 else 'it'}"
            )
        return None
    if any(c.isspace() for c in refresh_token):
        raise ConfigError("OPTIMIZELY_REFRESH_TOKEN contains spaces: paste the refresh token alone")
    missing = [name for name in list(values)[:2] if not values[name]]
    if missing:
        raise ConfigError(
            f"OPTIMIZELY_REFRESH_TOKEN needs {' and '.join(missing)} (your OAuth app's credentials, in its settings "
            "in Optimizely) to refresh with: set them, or unset OPTIMIZELY_REFRESH_TOKEN"
        )
    token_url = values["OPTIMIZELY_OAUTH_TOKEN_URL"] or DEFAULT_TOKEN_URL
    parts = urlsplit(token_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"OPTIMIZELY_OAUTH_TOKEN_URL must be an http(s) URL like {DEFAULT_TOKEN_URL}, not {token_url!r}"
        )
    return OAuthCredentials(
        refresh_token=refresh_token,
        client_id=values["OPTIMIZELY_OAUTH_CLIENT_ID"],
        client_secret=values["OPTIMIZELY_OAUTH_CLIENT_SECRET"],
        token_url=token_url,
    )


def parse_flag(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false (1/0, yes/no), not {value!r}")
