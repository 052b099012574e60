"""The one error type the Optimizely client raises, and the parsing of both APIs' error bodies."""

from __future__ import annotations

import json
from typing import Any

# How to get a token that works again: what the error of a refused token ends with.
_RENEWAL = (
    "get a new one: create a personal token in Optimizely's app under Profile > API Access and set "
    "OPTIMIZELY_API_TOKEN to it, or set OPTIMIZELY_REFRESH_TOKEN with OPTIMIZELY_OAUTH_CLIENT_ID and "
    "OPTIMIZELY_OAUTH_CLIENT_SECRET to have an OAuth token refreshed automatically."
)
_FORBIDDEN = (
    "The token's user lacks permission for this resource or action: ask an Optimizely admin for access, "
    "or use a project you can edit."
)
# What a person can do about each status; appended to Optimizely's own message.
_NEXT_STEP: dict[int, str] = {
    400: "Check the arguments named in the message and try again.",
    401: "Optimizely refused the token as expired or revoked (an OAuth access token lasts 2 hours): " + _RENEWAL,
    # Optimizely answers an expired or revoked token with a 401 or a 403, and its body may not say which it is.
    403: _FORBIDDEN + " If every call is refused this way, the token may have expired or been revoked instead (an "
    "OAuth access token lasts 2 hours): " + _RENEWAL,
    404: "Check the project id and the key; list_projects, list_environments and list_flags show what exists.",
    409: "The resource changed or is in a state that forbids this action: fetch it again and retry.",
    422: "Optimizely could not process the values sent: check them against the flag's current state.",
    429: "Optimizely's rate limit was reached: wait and try again.",
}
# With OPTIMIZELY_REFRESH_TOKEN the client refreshes a refused token and sends the call again: a refusal that
# comes after that is no expiry.
_REFRESHED: dict[int, str] = {
    401: "Optimizely refused the token just refreshed with OPTIMIZELY_REFRESH_TOKEN: the app's access was probably "
    "revoked. Re-authorise the OAuth app in Optimizely and set OPTIMIZELY_REFRESH_TOKEN to its new refresh token.",
    403: _FORBIDDEN,
}
_SERVER_SIDE = "Optimizely had a server-side problem: try again in a minute."


class OptimizelyError(Exception):
    """A failed call to Optimizely, written for a person: what failed and what to do.

    ``status`` is None when no HTTP response was received (connection failure, timeout).
    ``retry_after`` is the number of seconds to wait before trying again, when known.
    ``hint`` is the next step when the status alone does not tell it (a failed OAuth refresh).
    ``refreshing``: the token is refreshed with OPTIMIZELY_REFRESH_TOKEN, so a 401 or 403 is no expiry.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        title: str | None = None,
        uuid: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        method: str | None = None,
        path: str | None = None,
        hint: str | None = None,
        refreshing: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.title = title
        self.uuid = uuid
        self.code = code
        self.retry_after = retry_after
        self.method = method
        self.path = path
        self.hint = hint
        self.refreshing = refreshing

    @property
    def next_step(self) -> str:
        if self.hint is not None:
            return self.hint
        if self.refreshing and self.status in _REFRESHED:
            return _REFRESHED[self.status]
        if self.status is None:
            return "Check the network connection and OPTIMIZELY_API_BASE_URL, then try again."
        if self.status >= 500:
            if self.method not in (None, "GET"):  # a server error can come after the change was made
                return (
                    "The write may or may not have been applied; it was not sent again. "
                    "Read the resource to see its state before trying again."
                )
            return _SERVER_SIDE
        return _NEXT_STEP.get(self.status, "See Optimizely's message above.")

    def __str__(self) -> str:
        where = f"{self.method} {self.path}: " if self.method and self.path else ""
        status = f"HTTP {self.status}" if self.status is not None else "no response"
        text = f"{where}{status}: {self.message.rstrip('.')}."
        if self.uuid:
            text += f" Optimizely error uuid {self.uuid} (quote it to Optimizely support)."
        return f"{text} {self.next_step}"

    def __repr__(self) -> str:
        return f"OptimizelyError(status={self.status!r}, code={self.code!r}, uuid={self.uuid!r})"


def parse_error_body(status: int, body: bytes, content_type: str) -> OptimizelyError:
    """Build an OptimizelyError from a response body of either API, or from no usable body at all.

    Flags API: RFC 7807 ``{type, title, status, detail, uuid}``; v2: ``{code, message, uuid}``.
    Either may be missing fields, empty (a 404 is "Not found. No content") or not JSON (a proxy's HTML page).
    """
    data: Any = None
    if body.strip():
        try:
            data = json.loads(body)
        except ValueError:
            data = None
    if isinstance(data, dict):
        title = _text(data.get("title"))
        detail = _text(data.get("detail"))
        message = _text(data.get("message"))
        code = _text(data.get("code"))
        uuid = _text(data.get("uuid"))
        text = detail or message or title
        if title and detail and title not in detail:
            text = f"{title}: {detail}"
        return OptimizelyError(
            text or _fallback(status), status=status, title=title, uuid=uuid, code=code or str(status)
        )
    kind = "an empty body" if not body.strip() else f"a non-JSON body ({content_type or 'no content type'})"
    return OptimizelyError(f"{_fallback(status)} (Optimizely sent {kind})", status=status, code=str(status))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _fallback(status: int) -> str:
    return {
        400: "Bad request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not found",
        409: "Conflict",
        422: "Unprocessable entity",
        429: "Too many requests",
    }.get(status, "Server error" if status >= 500 else f"Unexpected status {status}")
