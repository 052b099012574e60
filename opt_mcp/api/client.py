"""OptimizelyClient: the only code in opt-mcp that speaks HTTP to Optimizely.

Flags API v1 under ``{base}/flags/v1`` and REST API v2 under ``{base}/v2``; Bearer auth; client-side pacing to
the published rate limits; bounded waits on 429; retries of safe calls only; every failure an OptimizelyError.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from opt_mcp import __version__
from opt_mcp.api.errors import OptimizelyError, parse_error_body
from opt_mcp.api.models import (
    Environment,
    EnvironmentsPage,
    ExperimentResults,
    ExperimentResultsReport,
    ExperimentRule,
    Flag,
    FlagsPage,
    Project,
    Ruleset,
)
from opt_mcp.api.oauth import OAuthCredentials
from opt_mcp.api.query import KEY_LIST_CHUNK, MAX_PER_PAGE, FlagFilters, ResultsResponse
from opt_mcp.api.ratelimit import Pacer, RateLimits, RateStatus, SharedBudget, retry_after

log = logging.getLogger("opt_mcp.api")

DEFAULT_BASE_URL = "https://api.optimizely.com"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_RESULTS_PATH = re.compile(r"^/v2/(experiments|campaigns)/[^/]+/results")
_RETRYABLE_STATUS = frozenset({502, 503, 504})
_TOKEN = re.compile(r"^[\x21-\x7e]{1,4096}$")  # printable ASCII without spaces: what fits in a Bearer header
# Seconds before an access token's known expiry when it is refreshed.
REFRESH_MARGIN = 60.0
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def token_digest(token: str) -> str:
    """What names a token in shared keys and caches: a digest, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _raw(response: httpx.Response) -> httpx.Response:
    return response


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Only safe calls (GET) are retried on timeouts and 5xx; see ``OptimizelyClient``."""

    attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_rate_limit_wait: float = 60.0
    """Seconds spent waiting out 429s for one call, in total, before giving up."""


class TokenAuth(httpx.Auth):
    """Signs each request with the access token; with OAuth credentials, refreshes that token (RFC 6749 §6).

    It refreshes before sending when the token's known lifetime (the last refresh's ``expires_in``, less a margin)
    has passed, or when there is no access token yet; and after a refused answer, then sends the same request again
    once. A refused request was not applied, so sending a write again is safe. Refused means a 401; or a 403 to the
    configured token, whose age is unknown (Optimizely answers an expired token with either, and its body may not
    say why). A 403 to a refreshed token, within its lifetime, is a real lack of permission.

    Requests that find the token due wait for one refresh instead of each making one. One TokenAuth may sign the
    requests of several clients (a hosted server's, for the operator's token): they share its tokens, and a rotated
    refresh token is then used once. Its repr never shows a token.
    """

    def __init__(
        self,
        token: str | None,
        *,
        oauth: OAuthCredentials | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._access = (token or "").strip()  # "": none yet, fetched with the refresh token on first use
        if not self._access and oauth is None:
            raise ValueError("An Optimizely API token is required (OPTIMIZELY_API_TOKEN).")
        self._configured = self._access
        self._expires_at: float | None = None  # known after a refresh only
        self._oauth = oauth
        self._refresh_token = oauth.refresh_token if oauth is not None else ""
        self._clock = clock
        self._lock = asyncio.Lock()
        # Every token and secret this auth ever held, masked wherever Optimizely's text could echo one.
        self._secrets = {self._access, self._refresh_token, oauth.client_secret if oauth is not None else ""} - {""}
        # What names these credentials in shared keys and caches, for as long as they are used. The configured
        # refresh token, when there is one, rather than any access token: those change every 2 hours (and a rotated
        # refresh token with them), and a key that changed with them would hand each replica a fresh rate-limit
        # budget at every refresh and empty the results cache. It also stays the same across restarts and replicas
        # that share one configuration, where the configured access token goes stale and is dropped or replaced.
        self.owner = token_digest(oauth.refresh_token if oauth is not None else self._access)
        self.refreshes = 0

    @property
    def refreshing(self) -> bool:
        """Whether this auth refreshes its token (so a refusal that reaches the caller is no expiry)."""
        return self._oauth is not None

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("TokenAuth signs the requests of an httpx.AsyncClient only")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        refused = ""  # the access token a refused answer to this request was signed with
        while True:
            if self._oauth is not None and self._due(refused):
                async with self._lock:
                    if self._due(refused):  # checked again: the refresh this request waited for may have done it
                        answer = yield self._refresh_request(self._oauth)
                        await answer.aread()
                        self._take(answer, self._oauth)
            signed = self._access
            request.headers["Authorization"] = f"Bearer {signed}"
            response = yield request
            if refused or not self._refused(response, signed):
                return
            refused = signed

    def is_refresh(self, exc: httpx.TransportError) -> bool:
        """Whether a transport failure was the refresh's (a request to the token URL), not the call's."""
        try:
            request = exc.request
        except RuntimeError:  # raised without a request
            return False
        return self._oauth is not None and str(request.url) == str(httpx.URL(self._oauth.token_url))

    def _due(self, refused: str) -> bool:
        if not self._access or self._access == refused:
            return True
        return self._expires_at is not None and self._clock() >= self._expires_at

    def _refused(self, response: httpx.Response, signed: str) -> bool:
        if self._oauth is None:
            return False
        return response.status_code == 401 or (response.status_code == 403 and signed == self._configured)

    def _refresh_request(self, oauth: OAuthCredentials) -> httpx.Request:
        # In the form-encoded body as RFC 6749 §6 says, never in the query string (Optimizely's docs show one):
        # a URL is what proxies and servers log.
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self._refresh_token,
            "client_id": oauth.client_id,
            "client_secret": oauth.client_secret,
        }
        return httpx.Request("POST", oauth.token_url, data=form, headers={"Accept": "application/json"})

    def _take(self, answer: httpx.Response, oauth: OAuthCredentials) -> None:
        """Keep the tokens of a refresh's answer (RFC 6749 §5.1), or raise what the refusal means (§5.2)."""
        path = urlsplit(oauth.token_url).path
        if answer.status_code != 200:
            raise self._refresh_refused(answer, path)
        try:
            data = answer.json()
            access, kind = data["access_token"], data.get("token_type", "bearer")
            if not isinstance(access, str) or not _TOKEN.match(access) or str(kind).lower() != "bearer":
                raise ValueError("no bearer access_token")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise OptimizelyError(
                "The OAuth token endpoint's answer held no usable bearer access token",
                status=answer.status_code,
                method="POST",
                path=path,
                hint="Nothing was applied. Check OPTIMIZELY_OAUTH_TOKEN_URL, then try again.",
            ) from None
        self._secrets.add(access)
        rotated = data.get("refresh_token")
        if isinstance(rotated, str) and _TOKEN.match(rotated):  # absent: the same refresh token stays valid
            self._refresh_token = rotated
            self._secrets.add(rotated)
        lifetime = data.get("expires_in")
        self._expires_at = None  # unknown: a 401 will tell
        if isinstance(lifetime, int | float) and not isinstance(lifetime, bool) and lifetime > 0:
            # Early, so that a request signed just before the end cannot arrive after it (clock skew, transit).
            self._expires_at = self._clock() + lifetime - min(REFRESH_MARGIN, lifetime / 2)
        self._access = access
        self.refreshes += 1
        log.info("Optimizely access token refreshed (expires in %s s)", lifetime)

    def _refresh_refused(self, answer: httpx.Response, path: str) -> OptimizelyError:
        try:
            data = answer.json()
        except ValueError:
            data = None
        code = data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), str) else None
        if code is not None and not _ERROR_CODE.match(code):
            code = None  # RFC 6749 §5.2 codes are short ASCII words: anything else is not repeated to anyone
        status = answer.status_code
        # Optimizely's docs: "In the event the user has revoked your access, you will receive an HTTP 400".
        if code == "invalid_grant" or (status == 400 and code is None):
            message = "Optimizely refused the OAuth refresh token (invalid_grant)"
            hint = (
                "Re-authorise the OAuth app in Optimizely and set OPTIMIZELY_REFRESH_TOKEN to its new refresh token: "
                "the user revoked the app's access, or the refresh token was used up (each works once when "
                "Optimizely rotates them, so no two servers may share one). The call was not applied."
            )
        elif code == "invalid_client" or status == 401:
            message = "Optimizely refused the OAuth app's client credentials (invalid_client)"
            hint = (
                "Set OPTIMIZELY_OAUTH_CLIENT_ID and OPTIMIZELY_OAUTH_CLIENT_SECRET to the app's, from its settings "
                "in Optimizely. The call was not applied."
            )
        elif status >= 500:
            message = "Optimizely's OAuth token endpoint failed"
            hint = "The call was not applied: try again in a minute."
        else:
            message = f"Optimizely's OAuth token endpoint refused the refresh ({code or 'no error code'})"
            hint = (
                "Check OPTIMIZELY_OAUTH_TOKEN_URL; if it is right, re-authorise the OAuth app and set "
                "OPTIMIZELY_REFRESH_TOKEN to its new refresh token. The call was not applied."
            )
        return OptimizelyError(message, status=status, code=code, method="POST", path=path, hint=hint)

    def __repr__(self) -> str:
        return f"TokenAuth(token=***, refreshing={self.refreshing})"


class OptimizelyClient:
    """An async client for the Optimizely Flags API v1 and REST API v2.

    ``token`` is a personal token or an OAuth access token; with ``oauth`` (a refresh token and its app's
    credentials) that token is refreshed when it expires, and may be None to fetch one on first use. A ``TokenAuth``
    instead of a token signs with that auth, shared with other clients. ``transport`` replaces the network (the
    sandbox and tests pass one). ``rate_limits`` paces requests client-side; ``retry`` bounds retries and 429 waits;
    ``sleep`` and ``clock`` are the time it waits in (tests pass a fake pair).

    Writes (PATCH, POST, DELETE) are retried only when the request provably never reached Optimizely (the
    connection was refused or never opened) or when Optimizely answered 429 (a rejected request, not applied).
    A write whose answer was lost is reported as such, never sent twice.
    """

    def __init__(
        self,
        token: str | TokenAuth | None,
        *,
        oauth: OAuthCredentials | None = None,
        base_url: str = DEFAULT_BASE_URL,
        flags_base_url: str | None = None,
        v2_base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        rate_limits: RateLimits | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedBudget | None = None,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        """``shared``: where the replicas of a deployment keep each token's rate-limit budget. ``on_request`` is
        called for each request sent (each attempt), before it leaves: the server counts a tool call's requests with
        it, for the call's log line."""
        if isinstance(token, TokenAuth) and oauth is not None:
            raise ValueError("Give the OAuth credentials to the TokenAuth, not beside it")
        self._auth = token if isinstance(token, TokenAuth) else TokenAuth(token, oauth=oauth, clock=clock)
        base = base_url.rstrip("/")
        self.flags_base_url = (flags_base_url or f"{base}/flags/v1").rstrip("/")
        self.v2_base_url = (v2_base_url or f"{base}/v2").rstrip("/")
        self._v2_prefix = urlsplit(self.v2_base_url).path
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        limits = rate_limits or RateLimits()
        self.owner = self._auth.owner  # names these credentials in shared keys and caches
        self._pacers = {
            name: Pacer(
                name, windows, clock=clock, sleep=sleep, shared=shared, shared_key=f"budget:{self.owner}:{name}"
            )
            for name, windows in (("flags", limits.flags), ("v2", limits.v2), ("results", limits.results))
        }
        self._http = httpx.AsyncClient(
            auth=self._auth,
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/json", "User-Agent": f"opt-mcp/{__version__}"},
            follow_redirects=False,
        )
        self.requests_sent = 0
        self._on_request = on_request

    def __repr__(self) -> str:
        return f"OptimizelyClient(flags_base_url={self.flags_base_url!r}, v2_base_url={self.v2_base_url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> OptimizelyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def rate_status(self) -> list[RateStatus]:
        """The current rate-limit budget per class of endpoint (flags, v2, results)."""
        return [pacer.status() for pacer in self._pacers.values()]

    # ----------------------------------------------------------------------------------------------------------
    # Flags
    # ----------------------------------------------------------------------------------------------------------

    def flags_link(self, project_id: int, filters: FlagFilters | None = None, *, per_page: int | None = None) -> str:
        """The link (relative to ``/flags/v1``) of the first page of flags, as ``next_url`` links are written."""
        params = (filters or FlagFilters()).params()
        if per_page is not None:
            params["per_page"] = str(_per_page(per_page))
        path = f"/projects/{_pid(project_id)}/flags"
        return f"{path}?{urlencode(params, safe=',!:/')}" if params else path

    async def list_flags_page(
        self,
        project_id: int,
        filters: FlagFilters | None = None,
        *,
        per_page: int | None = None,
        page_token: str | None = None,
        page_number: int | None = None,
    ) -> FlagsPage:
        """One page of flags: the first, or the one a ``page_token`` or ``page_number`` names.

        To walk on, prefer ``follow_flags_link(page.next_link)``.
        """
        link = self.flags_link(project_id, filters, per_page=per_page)
        selectors = {"page_token": page_token, "page_number": None if page_number is None else str(page_number)}
        extra = urlencode({k: v for k, v in selectors.items() if v is not None})
        if extra:
            link += ("&" if "?" in link else "?") + extra
        return await self.follow_flags_link(project_id, link)

    async def follow_flags_link(self, project_id: int, link: str) -> FlagsPage:
        """Fetch the page a ``next_url``/``prev_url`` element points to (relative to ``/flags/v1``)."""
        return await self._get_model("flags", _checked_link(project_id, link, "flags"), FlagsPage)

    async def iter_flags(
        self, project_id: int, filters: FlagFilters | None = None, *, per_page: int = MAX_PER_PAGE
    ) -> AsyncIterator[Flag]:
        """Every flag that matches, fetching pages lazily by following ``next_url``."""
        async for page in self.iter_flag_pages(project_id, filters, per_page=per_page):
            for flag in page.items:
                yield flag

    async def iter_flag_pages(
        self, project_id: int, filters: FlagFilters | None = None, *, per_page: int = MAX_PER_PAGE
    ) -> AsyncIterator[FlagsPage]:
        """Every page of flags that match, each fetched when the previous one is done with."""
        page = await self.list_flags_page(project_id, filters, per_page=per_page)
        while True:
            yield page
            if page.next_link is None:
                return
            page = await self.follow_flags_link(project_id, page.next_link)

    async def get_flag(self, project_id: int, flag_key: str) -> Flag:
        return await self._get_model("flags", f"/projects/{_pid(project_id)}/flags/{_seg(flag_key)}", Flag)

    async def find_flags(
        self,
        project_id: int,
        keys: Sequence[str],
        *,
        archived_first: bool = False,
        chunk: int = KEY_LIST_CHUNK,
        on_chunk: Callable[[int], Awaitable[None]] | None = None,
    ) -> dict[str, Flag]:
        """The flags with these keys that exist, archived or not; a key that is absent from the answer is absent.

        Nothing here rests on what the specs leave open: each list names ``archived`` (its default is not
        documented): first the state ``archived_first`` names, then the other for the keys still missing; a key
        that neither list returns is looked up with ``GET .../flags/{key}`` before it is called unknown (the
        spec gives ``key_list`` no style, and a server that ignored the filter would answer with other flags). If
        a list returns keys that were not asked for, the filter was ignored: the rest are fetched one by one.
        ``on_chunk`` is told how many keys each chunk looked up.
        """
        found: dict[str, Flag] = {}
        filter_ignored = False
        for start in range(0, len(keys), chunk):
            asked = list(dict.fromkeys(keys[start : start + chunk]))
            for archived in (archived_first, not archived_first):
                missing = [key for key in asked if key not in found]
                if not missing or filter_ignored:
                    break
                page = await self.list_flags_page(
                    project_id, FlagFilters(key_list=missing, archived=archived), per_page=chunk
                )
                if any(flag.key not in missing for flag in page.items):
                    filter_ignored = True
                    log.warning("key_list was not honoured by %s: looking flags up one by one", self.flags_base_url)
                found.update((flag.key, flag) for flag in page.items if flag.key in missing)
            for key in asked:
                if key not in found:
                    try:
                        found[key] = await self.get_flag(project_id, key)
                    except OptimizelyError as exc:
                        if exc.status != 404:
                            raise
            if on_chunk is not None:
                await on_chunk(len(asked))
        return found

    async def patch_flags(self, project_id: int, operations: Sequence[dict[str, Any]]) -> dict[str, Flag]:
        """Apply an RFC 6902 JSON Patch whose paths start with ``/{flag_key}/``. Returns the changed flags.

        Optimizely silently ignores read-only and unknown paths: callers must check paths before and the
        response after (the guard does).
        """
        response = await self._send(
            "flags",
            "PATCH",
            f"/projects/{_pid(project_id)}/flags",
            content=json.dumps(list(operations)).encode(),
            headers={"Content-Type": "application/json-patch+json"},
            parse=_raw,
        )
        return self._parse_write(response, _flag_map)

    async def archive_flags(self, project_id: int, keys: Sequence[str]) -> dict[str, Flag]:
        return await self._post_keys(project_id, "archived", keys)

    async def unarchive_flags(self, project_id: int, keys: Sequence[str]) -> dict[str, Flag]:
        return await self._post_keys(project_id, "unarchived", keys)

    async def _post_keys(self, project_id: int, action: str, keys: Sequence[str]) -> dict[str, Flag]:
        response = await self._send(
            "flags", "POST", f"/projects/{_pid(project_id)}/flags/{action}", json_body={"keys": list(keys)}, parse=_raw
        )
        return self._parse_write(response, _flag_map)

    async def delete_flag(self, project_id: int, flag_key: str) -> None:
        """Delete a flag permanently (archiving is the reversible alternative)."""
        await self._send(
            "flags", "DELETE", f"/projects/{_pid(project_id)}/flags/{_seg(flag_key)}", ok=(204,), parse=_raw
        )

    # ----------------------------------------------------------------------------------------------------------
    # Rulesets and environments
    # ----------------------------------------------------------------------------------------------------------

    def _ruleset_path(self, project_id: int, flag_key: str, environment_key: str) -> str:
        return f"/projects/{_pid(project_id)}/flags/{_seg(flag_key)}/environments/{_seg(environment_key)}/ruleset"

    async def get_ruleset(self, project_id: int, flag_key: str, environment_key: str) -> Ruleset:
        return await self._get_model("flags", self._ruleset_path(project_id, flag_key, environment_key), Ruleset)

    async def patch_ruleset(
        self, project_id: int, flag_key: str, environment_key: str, operations: Sequence[dict[str, Any]]
    ) -> Ruleset:
        response = await self._send(
            "flags",
            "PATCH",
            self._ruleset_path(project_id, flag_key, environment_key),
            content=json.dumps(list(operations)).encode(),
            headers={"Content-Type": "application/json-patch+json"},
            parse=_raw,
        )
        return self._parse_write(response, Ruleset.model_validate)

    async def enable_ruleset(self, project_id: int, flag_key: str, environment_key: str) -> Ruleset:
        """Turn the flag on in one environment (all its enabled rules start serving)."""
        return await self._toggle_ruleset(project_id, flag_key, environment_key, "enabled")

    async def disable_ruleset(self, project_id: int, flag_key: str, environment_key: str) -> Ruleset:
        """Turn the flag off in one environment (every rule stops serving)."""
        return await self._toggle_ruleset(project_id, flag_key, environment_key, "disabled")

    async def _toggle_ruleset(self, project_id: int, flag_key: str, environment_key: str, action: str) -> Ruleset:
        # The spec answers 200 with the ruleset; Optimizely's own client expects 204 No Content. Either way the
        # caller gets the ruleset as it now is: read back when the answer has none.
        path = self._ruleset_path(project_id, flag_key, environment_key)
        response = await self._send("flags", "POST", f"{path}/{action}", ok=(200, 204), parse=_raw)
        if response.status_code == 200 and response.content.strip():
            return self._parse_write(response, Ruleset.model_validate)
        try:
            return await self.get_ruleset(project_id, flag_key, environment_key)
        except OptimizelyError as exc:
            exc.message = (
                f"Optimizely accepted the change (HTTP {response.status_code}) but the ruleset could not be read "
                f"back ({exc.message}); get_flag shows its state before changing it again"
            )
            raise

    async def list_environments(self, project_id: int) -> list[Environment]:
        """Every environment of a project, in the API's order, following ``next_url``."""
        path = f"/projects/{_pid(project_id)}/environments"
        page = await self._get_model("flags", path, EnvironmentsPage, params={"per_page": str(MAX_PER_PAGE)})
        items = list(page.items)
        while page.next_link is not None:
            link = _checked_link(project_id, page.next_link, "environments")
            page = await self._get_model("flags", link, EnvironmentsPage)
            items.extend(page.items)
        return items

    # ----------------------------------------------------------------------------------------------------------
    # REST API v2
    # ----------------------------------------------------------------------------------------------------------

    async def list_projects(self, *, per_page: int = MAX_PER_PAGE) -> list[Project]:
        """Every project the token can see, following the ``Link: rel=next`` headers."""
        projects: list[Project] = []
        url: str | None = f"{self.v2_base_url}/projects"
        params: dict[str, str] | None = {"per_page": str(_per_page(per_page)), "page": "1"}
        while url is not None:
            response = await self._send("v2", "GET", url, params=params, parse=_project_list)
            projects.extend(response[0])
            url, params = self._v2_next(response[1]), None
        return projects

    def _v2_next(self, link: str | None) -> str | None:
        # Only follow links that stay on the configured v2 origin and path.
        if link is None:
            return None
        if not link.startswith(self.v2_base_url + "/projects"):
            raise OptimizelyError(
                "Optimizely sent a pagination link outside the v2 API; refusing to follow it",
                status=200,
            )
        return link

    async def get_experiment_rule(self, project_id: int, experiment_id: int) -> ExperimentRule:
        """The flag rule behind a v2 experiment id (a rule's ``layer_experiment_id``), from the Flags API: its key,
        type, flag and environment."""
        return await self._get_model(
            "flags", f"/projects/{_pid(project_id)}/rules/{_pid(experiment_id)}", ExperimentRule
        )

    async def get_experiment_results(
        self,
        experiment_id: int,
        *,
        start_time: str | None = None,
        end_time: str | None = None,
        baseline_variation_id: str | None = None,
    ) -> ResultsResponse:
        """Results of the experiment behind a rule (the rule's ``layer_experiment_id``)."""
        params = _window(start_time, end_time, baseline_variation_id)
        path = f"{self.v2_base_url}/experiments/{_pid(experiment_id)}/results"
        # 202 means "still computing, try again shortly": retried within the same bound as other safe calls.
        for attempt in range(1, self._retry.attempts + 1):
            answer = await self._send("v2", "GET", path, params=params, ok=(200, 202, 204), parse=_results)
            if answer.state != "processing" or attempt == self._retry.attempts:
                return answer
            await self._backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_experiment_report(
        self,
        experiment_id: int,
        *,
        start_time: str | None = None,
        end_time: str | None = None,
        baseline_variation_id: str | None = None,
    ) -> ExperimentResultsReport | None:
        """Optimizely's inferred outcome (win, loss, inconclusive) over the same window and baseline as the
        results it goes with (the endpoint takes the same parameters), or None while there is none."""
        path = f"{self.v2_base_url}/experiments/{_pid(experiment_id)}/report"
        params = _window(start_time, end_time, baseline_variation_id)

        def parse(response: httpx.Response) -> ExperimentResultsReport | None:
            if response.status_code != 200:
                return None
            return ExperimentResultsReport.model_validate(response.json())

        return await self._send("v2", "GET", path, params=params, ok=(200, 202, 204), parse=parse)

    # ----------------------------------------------------------------------------------------------------------
    # Transport
    # ----------------------------------------------------------------------------------------------------------

    async def _get_model(self, api: str, path: str, model: type[M], *, params: dict[str, str] | None = None) -> M:
        return await self._send(api, "GET", path, params=params, parse=lambda r: model.model_validate_json(r.content))

    def _parse_write(self, response: httpx.Response, parse: Callable[[Any], T]) -> T:
        try:
            return parse(response.json())
        except (ValueError, ValidationError):
            raise OptimizelyError(
                "The change was accepted (HTTP 2xx) but Optimizely's answer could not be read; "
                "fetch the resource to see its current state before changing it again",
                status=response.status_code,
                method=response.request.method,
                path=response.request.url.path,
            ) from None

    async def _send(
        self,
        api: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        ok: Sequence[int] = (200,),
        parse: Callable[[httpx.Response], T],
    ) -> T:
        """Send one logical request: pace, retry what is safe to retry, raise OptimizelyError otherwise.

        ``parse`` runs inside the retry loop for safe calls, so a truncated or malformed answer to a GET is
        retried like a 5xx. Returns ``parse(response)`` .
        """
        url = path if path.startswith("http") else self._url(api, path)
        shown = urlsplit(url).path  # shown in errors and logs: never the query string
        safe = method == "GET"
        pacers = self._pacers_for(api, url)
        waited = 0.0
        attempt = refusals = 0
        while True:
            attempt += 1
            stamps = [await pacer.acquire() for pacer in pacers]
            started = time.monotonic()
            try:
                self.requests_sent += 1
                if self._on_request is not None:
                    self._on_request()
                response = await self._http.request(
                    method, url, params=params, json=json_body, content=content, headers=headers
                )
                for pacer, stamp in zip(pacers, stamps, strict=True):
                    pacer.settle(stamp)
                    await pacer.settle_shared(stamp)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                # The request never left: retrying cannot apply a change twice, even for a write.
                if attempt < self._retry.attempts:
                    await self._backoff(attempt)
                    continue
                raise OptimizelyError(
                    f"Could not connect to Optimizely after {attempt} attempts",
                    method=method,
                    path=shown,
                ) from None
            except httpx.TransportError as exc:
                if self._auth.is_refresh(exc):
                    # The token's refresh failed, not the call: the call was never sent, or refused (401) unapplied.
                    raise OptimizelyError(
                        "The OAuth access token could not be refreshed (the token endpoint "
                        f"{'timed out' if isinstance(exc, httpx.TimeoutException) else 'could not be reached'}): "
                        "the call was not applied. Try again in a moment",
                        method=method,
                        path=shown,
                    ) from None
                if safe and attempt < self._retry.attempts:
                    await self._backoff(attempt)
                    continue
                raise self._lost(method, shown, exc, attempt) from None
            elapsed = time.monotonic() - started
            log.debug("%s %s -> %s in %.0f ms", method, shown, response.status_code, elapsed * 1000)
            for pacer in pacers:
                pacer.observe(response.headers)

            if response.status_code == 429:
                refusals += 1
                # At least the growing backoff, so a reset already in the past cannot make the loop spin and
                # the total-wait bound always ends it.
                wait = max(retry_after(response.headers) or 0.0, self._backoff_floor(refusals))
                if waited + wait > self._retry.max_rate_limit_wait:
                    raise self._rate_limited(response, method, shown, wait)
                waited += wait
                for pacer in pacers:
                    pacer.block_for(wait)
                attempt -= 1  # a 429 is a refusal, not a failed attempt
                continue
            if response.status_code in _RETRYABLE_STATUS and safe and attempt < self._retry.attempts:
                await self._backoff(attempt)
                continue
            if response.status_code not in ok:
                raise self._error(response, method, shown)
            try:
                return parse(response)
            except (ValueError, ValidationError) as exc:
                if safe and attempt < self._retry.attempts:
                    await self._backoff(attempt)
                    continue
                raise OptimizelyError(
                    f"Optimizely sent an answer that could not be read ({_short(exc)})",
                    status=response.status_code,
                    method=method,
                    path=shown,
                ) from None

    def _url(self, api: str, path: str) -> str:
        base = self.flags_base_url if api == "flags" else self.v2_base_url
        return base + path

    def _pacers_for(self, api: str, url: str) -> list[Pacer]:
        if api == "flags":
            return [self._pacers["flags"]]
        v2_path = "/v2" + urlsplit(url).path.removeprefix(self._v2_prefix)
        if _RESULTS_PATH.match(v2_path):
            return [self._pacers["v2"], self._pacers["results"]]
        return [self._pacers["v2"]]

    def _backoff_delay(self, attempt: int) -> float:
        # Exponential backoff with full jitter.
        ceiling = min(self._retry.backoff_max, self._retry.backoff_base * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography

    def _backoff_floor(self, refusals: int) -> float:
        return float(self._retry.backoff_base * 2.0 ** (refusals - 1))

    async def _backoff(self, attempt: int) -> None:
        await self._sleep(self._backoff_delay(attempt))

    def _redact(self, text: str) -> str:
        return self._auth.redact(text)

    def _error(self, response: httpx.Response, method: str, shown: str) -> OptimizelyError:
        error = parse_error_body(response.status_code, response.content, response.headers.get("content-type", ""))
        error.message = self._redact(error.message)
        error.title = self._redact(error.title) if error.title else None
        error.method, error.path = method, shown
        error.refreshing = self._auth.refreshing
        return error

    def _rate_limited(self, response: httpx.Response, method: str, shown: str, wait: float) -> OptimizelyError:
        error = self._error(response, method, shown)
        at = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + wait))
        error.message = (
            f"Optimizely's rate limit is exhausted; waiting would take {wait:.0f} s more than the "
            f"{self._retry.max_rate_limit_wait:.0f} s allowed. Try again after {at}"
        )
        error.retry_after = wait
        return error

    def _lost(self, method: str, shown: str, exc: httpx.TransportError, attempts: int) -> OptimizelyError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "lost the connection"
        if method == "GET":
            return OptimizelyError(
                f"The request to Optimizely {kind} after {attempts} attempts", method=method, path=shown
            )
        return OptimizelyError(
            f"The write was sent but the request {kind} before Optimizely answered: it may or may not have "
            "been applied. It was not sent again. Fetch the resource to see its state before retrying",
            method=method,
            path=shown,
        )


def _pid(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"A project or experiment id must be a positive integer, not {value!r}")
    return str(value)


def _seg(value: str) -> str:
    """One URL path segment: nothing in a key can reach another path."""
    if not value:
        raise ValueError("A key must not be empty")
    return quote(value, safe="")


def _per_page(value: int) -> int:
    if not 1 <= value <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}, not {value}")
    return value


def _checked_link(project_id: int, link: str, collection: str) -> str:
    """A pagination link from a response, checked to stay on this project's collection."""
    parts = urlsplit(link)
    prefix = f"/projects/{_pid(project_id)}/{collection}"
    if parts.scheme or parts.netloc or ".." in parts.path or not parts.path.startswith(prefix):
        raise ValueError(f"Not a link to {prefix}: {link[:100]!r}")
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _flag_map(data: Any) -> dict[str, Flag]:
    if not isinstance(data, dict):
        raise ValueError("expected an object keyed by flag key")
    return {key: Flag.model_validate(value) for key, value in data.items()}


def _project_list(response: httpx.Response) -> tuple[list[Project], str | None]:
    data = response.json()
    if not isinstance(data, list):
        raise ValueError("expected a list of projects")
    next_link = response.links.get("next", {}).get("url")
    return [Project.model_validate(item) for item in data], next_link


def _window(start_time: str | None, end_time: str | None, baseline_variation_id: str | None) -> dict[str, str]:
    """The query of a results or report request: the window and baseline asked, nothing else."""
    return {
        name: value
        for name, value in (
            ("start_time", start_time),
            ("end_time", end_time),
            ("baseline_variation_id", baseline_variation_id),
        )
        if value is not None
    }


def _results(response: httpx.Response) -> ResultsResponse:
    if response.status_code == 202:
        return ResultsResponse(state="processing")
    if response.status_code == 204 or not response.content.strip():
        return ResultsResponse(state="no_data")
    return ResultsResponse(state="ready", results=ExperimentResults.model_validate_json(response.content))
