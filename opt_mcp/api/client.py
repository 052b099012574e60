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
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
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
from opt_mcp.api.query import MAX_PER_PAGE, FlagFilters, ResultsResponse
from opt_mcp.api.ratelimit import Pacer, RateLimits, RateStatus, retry_after
from opt_mcp.calls import note_api_call
from opt_mcp.shared import Store

log = logging.getLogger("opt_mcp.api")

DEFAULT_BASE_URL = "https://api.optimizely.com"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_RESULTS_PATH = re.compile(r"^/v2/(experiments|campaigns)/[^/]+/results")
_RETRYABLE_STATUS = frozenset({502, 503, 504})
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


class _BearerAuth(httpx.Auth):
    """Adds the token to each request; its repr never shows it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth(token=***)"


class OptimizelyClient:
    """An async client for the Optimizely Flags API v1 and REST API v2.

    ``token`` is a personal token or an OAuth access token. ``transport`` replaces the network (the sandbox and
    tests pass one). ``rate_limits`` paces requests client-side; ``retry`` bounds retries and 429 waits;
    ``sleep`` and ``clock`` are the time it waits in (tests pass a fake pair).

    Writes (PATCH, POST, DELETE) are retried only when the request provably never reached Optimizely (the
    connection was refused or never opened) or when Optimizely answered 429 (a rejected request, not applied).
    A write whose answer was lost is reported as such, never sent twice.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        flags_base_url: str | None = None,
        v2_base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        rate_limits: RateLimits | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        shared: Store | None = None,
    ) -> None:
        """``shared``: where the replicas of a deployment keep each token's rate-limit budget (opt_mcp.shared)."""
        if not token or not token.strip():
            raise ValueError("An Optimizely API token is required (OPTIMIZELY_API_TOKEN).")
        self._token = token.strip()
        base = base_url.rstrip("/")
        self.flags_base_url = (flags_base_url or f"{base}/flags/v1").rstrip("/")
        self.v2_base_url = (v2_base_url or f"{base}/v2").rstrip("/")
        self._v2_prefix = urlsplit(self.v2_base_url).path
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        limits = rate_limits or RateLimits()
        self.owner = token_digest(self._token)  # names this token in shared keys and caches
        self._pacers = {
            name: Pacer(
                name, windows, clock=clock, sleep=sleep, shared=shared, shared_key=f"budget:{self.owner}:{name}"
            )
            for name, windows in (("flags", limits.flags), ("v2", limits.v2), ("results", limits.results))
        }
        self._http = httpx.AsyncClient(
            auth=_BearerAuth(self._token),
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/json", "User-Agent": f"opt-mcp/{__version__}"},
            follow_redirects=False,
        )
        self.requests_sent = 0

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
        path = self._ruleset_path(project_id, flag_key, environment_key) + "/enabled"
        return self._parse_write(await self._send("flags", "POST", path, parse=_raw), Ruleset.model_validate)

    async def disable_ruleset(self, project_id: int, flag_key: str, environment_key: str) -> Ruleset:
        """Turn the flag off in one environment (every rule stops serving)."""
        path = self._ruleset_path(project_id, flag_key, environment_key) + "/disabled"
        return self._parse_write(await self._send("flags", "POST", path, parse=_raw), Ruleset.model_validate)

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
                note_api_call()
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
        return text.replace(self._token, "***") if self._token in text else text

    def _error(self, response: httpx.Response, method: str, shown: str) -> OptimizelyError:
        error = parse_error_body(response.status_code, response.content, response.headers.get("content-type", ""))
        error.message = self._redact(error.message)
        error.title = self._redact(error.title) if error.title else None
        error.method, error.path = method, shown
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
