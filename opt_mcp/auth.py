"""Who may use a hosted server: the operator's bearer tokens, or an OAuth 2.1 authorization server's.

Both are ``TokenVerifier``s for the MCP SDK's bearer middleware, which answers 401 with ``WWW-Authenticate`` and
binds each session to the identity that opened it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import httpx
from mcp.server.auth.provider import AccessToken

from opt_mcp.settings import AUTH_TOKENS_FILE

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
MIN_TOKEN_LENGTH = 24
INTROSPECTION_CACHE = 1024
INTROSPECTION_CACHE_SECONDS = 60.0


class AuthConfigError(ValueError):
    """A token file that cannot be used; the message names the file and the line, never a token."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def read_name_lines(path: str, *, what: str, min_secret: int) -> dict[str, str]:
    """``name:secret`` lines (blank lines and ``#`` comments skipped) as {name: secret}."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AuthConfigError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    entries: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.partition(":")
        name, secret = name.strip(), secret.strip()
        if not sep or not _NAME.match(name):
            raise AuthConfigError(f"{what} {path} line {number}: expected name:token, the name in letters/digits._@+-")
        if len(secret) < min_secret or any(c.isspace() for c in secret):
            raise AuthConfigError(
                f"{what} {path} line {number} ({name}): the token must be at least {min_secret} characters, no spaces"
            )
        if name in entries:
            raise AuthConfigError(f"{what} {path} line {number}: {name} appears twice")
        entries[name] = secret
    return entries


class StaticTokens:
    """Bearer tokens the operator issued, one per person. Only their SHA-256 digests are kept, and a presented
    token is compared with every one of them in constant time, so timing reveals neither a token nor a name."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        digests = [(name, _digest(token)) for name, token in tokens.items()]
        if len({digest for _, digest in digests}) != len(digests):
            raise AuthConfigError("two people share one token: give each person a token of their own")
        self._digests = digests

    @classmethod
    def from_file(cls, path: str) -> StaticTokens:
        return cls(read_name_lines(path, what=AUTH_TOKENS_FILE.name, min_secret=MIN_TOKEN_LENGTH))

    def __repr__(self) -> str:
        return f"StaticTokens(people={len(self._digests)})"

    @property
    def people(self) -> list[str]:
        return [name for name, _ in self._digests]

    async def verify_token(self, token: str) -> AccessToken | None:
        presented = _digest(token)
        found: str | None = None
        for name, digest in self._digests:
            if hmac.compare_digest(presented, digest):
                found = name
        if found is None:
            return None
        return AccessToken(token="", client_id=found, scopes=[], subject=found)


class IntrospectedTokens:
    """OAuth 2.1 access tokens, checked with the authorization server's RFC 7662 introspection endpoint.

    A token is accepted only when it is active, unexpired and was issued for this server (its ``aud`` names the
    resource URL, RFC 8707): a token meant for another service is refused. Required scopes are checked by the SDK's
    middleware (403 ``insufficient_scope``). Answers are remembered for a minute, never beyond the token's expiry.
    """

    def __init__(
        self,
        introspection_url: str,
        *,
        resource_url: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = introspection_url
        self._resource = resource_url.rstrip("/")
        self._credentials = (client_id, client_secret) if client_id and client_secret else None
        self._http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10.0))
        self._cache: OrderedDict[bytes, tuple[float, AccessToken | None]] = OrderedDict()

    def __repr__(self) -> str:
        return f"IntrospectedTokens(url={self._url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def verify_token(self, token: str) -> AccessToken | None:
        key = _digest(token)
        now = time.time()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        access = await self._introspect(token)
        until = min(now + INTROSPECTION_CACHE_SECONDS, access.expires_at if access and access.expires_at else now + 60)
        self._cache[key] = (until, access)
        self._cache.move_to_end(key)
        while len(self._cache) > INTROSPECTION_CACHE:
            self._cache.popitem(last=False)
        return access

    async def _introspect(self, token: str) -> AccessToken | None:
        try:
            response = await self._http.post(
                self._url,
                data={"token": token, "token_type_hint": "access_token"},
                auth=self._credentials or httpx.USE_CLIENT_DEFAULT,
            )
            answer = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("token introspection failed: %s", type(exc).__name__)
            return None
        if not isinstance(answer, dict) or answer.get("active") is not True:
            return None
        audiences = answer.get("aud") or []
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if self._resource not in {str(a).rstrip("/") for a in audiences}:
            log.warning("refused a token issued for another resource")
            return None
        scopes = str(answer.get("scope") or "").split()
        expires = answer.get("exp")
        subject = answer.get("sub")
        return AccessToken(
            token="",
            client_id=str(answer.get("client_id") or subject or "unknown"),
            scopes=scopes,
            expires_at=int(expires) if isinstance(expires, int | float) else None,
            resource=self._resource,
            subject=str(subject) if subject else None,
            claims={"iss": answer["iss"]} if isinstance(answer.get("iss"), str) else None,
        )
