"""The sandbox's OAuth authorization server: the token endpoint's refresh grant (RFC 6749 §6), and the access
tokens it issued, each of which expires on the sandbox's clock."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Literal
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from opt_mcp.sandbox.config import ACCESS_TOKEN_LIFETIME, Readings, SandboxOAuth

TokenState = Literal["valid", "expired", "unknown"]
# Form fields that carry a secret: the request log keeps them masked.
SECRET_FIELDS = frozenset({"refresh_token", "client_secret", "code", "access_token"})
# RFC 6749 §5.1: an answer that carries tokens must not be cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenIssuer:
    """The access tokens this sandbox issued or started with, and the refresh tokens it accepts.

    With ``config`` (an OAuth app) only its client and its current refresh token are granted; without, any refresh
    is (as any Bearer token is accepted without ``SandboxConfig.token``). Issued access tokens expire either way.
    """

    def __init__(self, config: SandboxOAuth | None, readings: Readings, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.readings = readings
        self._clock = clock
        self._expiry: dict[str, float] = {}  # access token -> when it expires, on the sandbox's clock
        self._refresh: set[str] = set()
        # Every token configured or handed out: what a test checks never leaks.
        self.tokens: list[str] = []
        if config is not None:
            self._refresh.add(config.refresh_token)
            self.tokens.append(config.refresh_token)
            if config.access_token:
                self._expiry[config.access_token] = self._now() + config.access_token_lifetime
                self.tokens.append(config.access_token)

    def _now(self) -> float:
        return self._clock().timestamp()

    def check(self, token: str) -> TokenState:
        """Whether ``token`` is an access token of this server, and still valid."""
        expires = self._expiry.get(token)
        if expires is None:
            return "unknown"
        return "valid" if self._now() < expires else "expired"

    async def token(self, request: Request) -> Response:
        """``POST /oauth2/token``. Parameters from the form-encoded body (RFC 6749 §6) or the query string, as
        Optimizely's docs write them; client credentials there or in HTTP Basic (RFC 6749 §2.3.1)."""
        params = dict(parse_qsl(request.scope["query_string"].decode("latin-1")))
        params.update(parse_qsl((await request.body()).decode("utf-8", errors="replace")))
        basic = _basic(request.headers.get("authorization", ""))
        client_id, client_secret = basic or (params.get("client_id", ""), params.get("client_secret", ""))
        grant = params.get("grant_type", "")
        if not grant:
            return _refusal(400, "invalid_request", "grant_type is required")
        if grant != "refresh_token":
            return _refusal(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported here")
        refresh_token = params.get("refresh_token", "")
        if not refresh_token or not client_id:
            return _refusal(400, "invalid_request", "refresh_token and client_id are required")
        config = self.config
        if config is not None and not (
            hmac.compare_digest(client_id.encode(), config.client_id.encode())
            and hmac.compare_digest(client_secret.encode(), config.client_secret.encode())
        ):
            # §5.2: 401 for a client that failed to authenticate, with a challenge when it tried HTTP Basic.
            headers = {"WWW-Authenticate": 'Basic realm="oauth"'} if basic else {}
            return _refusal(401, "invalid_client", "Client authentication failed", headers)
        if config is not None and refresh_token not in self._refresh:
            # Optimizely's docs: a user who revoked the app's access gets an HTTP 400.
            return _refusal(400, "invalid_grant", "The refresh token is invalid, revoked or already used")
        return self._issue(refresh_token, config.lifetime if config is not None else ACCESS_TOKEN_LIFETIME)

    def _issue(self, refresh_token: str, lifetime: int) -> Response:
        access = f"sandbox-access-{secrets.token_urlsafe(18)}"
        self._expiry[access] = self._now() + lifetime
        self.tokens.append(access)
        answer: dict[str, str | int] = {"access_token": access, "token_type": "bearer", "expires_in": lifetime}
        if self.readings.refresh_rotation == "rotates":
            rotated = f"sandbox-refresh-{secrets.token_urlsafe(18)}"
            self._refresh.discard(refresh_token)
            self._refresh.add(rotated)
            self.tokens.append(rotated)
            answer["refresh_token"] = rotated
        return JSONResponse(answer, headers=_NO_STORE)


def masked_form(raw: bytes | str) -> str:
    """A form-encoded body or query with its secrets masked, for the request log."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    pairs = []
    for pair in text.split("&") if text else []:
        name = unquote(pair.partition("=")[0])
        pairs.append(f"{name}=***" if name in SECRET_FIELDS else pair)
    return "&".join(pairs)


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, _, client_secret = decoded.partition(":")
    return unquote(client_id), unquote(client_secret)


def _refusal(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers={**_NO_STORE, **(headers or {})}
    )
