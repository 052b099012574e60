"""The OAuth credentials an Optimizely access token is refreshed with (RFC 6749 §6).

Only data: the settings load it at start-up, which must not pay for the HTTP stack (``TokenAuth`` in
``opt_mcp.api.client`` does the refreshing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Optimizely's authorization server (authorization-code and refresh-token docs; the Flags spec's OAuth2 scheme).
DEFAULT_TOKEN_URL = "https://app.optimizely.com/oauth2/token"  # noqa: S105 - a URL, not a secret
# An access token's lifetime, in seconds (``expires_in: 7200`` in both docs' answers).
ACCESS_TOKEN_LIFETIME = 7200


@dataclass(frozen=True)
class OAuthCredentials:
    """An OAuth app's client credentials and the refresh token one authorisation of it gave; no secret in a repr."""

    refresh_token: str = field(repr=False)
    client_id: str
    client_secret: str = field(repr=False)
    token_url: str = DEFAULT_TOKEN_URL
