"""What a tool call runs with: the Optimizely client, the settings, the default project; and how an API failure
becomes a tool error the model can act on."""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, ConfigDict

from opt_mcp.api.errors import OptimizelyError
from opt_mcp.api.models import ExperimentResults, FlagsPage
from opt_mcp.api.query import ResultsResponse
from opt_mcp.config import Settings
from opt_mcp.guard import Guard
from opt_mcp.lookup import NotFound
from opt_mcp.shared import MemoryStore, Store, StoreDown

if TYPE_CHECKING:
    from opt_mcp.api.client import OptimizelyClient

PAGE_MEMORY = 8
PAGE_MEMORY_SECONDS = 60.0
_REASON_CHARACTERS = 200  # of Optimizely's message, in the few words that say how a request failed


@dataclass(frozen=True)
class Answer:
    """An experiment's results and Optimizely's inferred outcome for them, or why that outcome is missing."""

    results: ResultsResponse
    outcome: str | None = None
    report_error: str | None = None  # how /report failed, when it did: the results stand without it


class _Remembered(BaseModel):
    """An answer as the results cache holds it (JSON: the cache may be Redis, shared by replicas)."""

    model_config = ConfigDict(defer_build=True)  # built on the first answer remembered, not at start-up

    state: Literal["ready", "no_data"]
    results: ExperimentResults | None
    outcome: str | None
    report_error: str | None = None
    expires: float = 0.0  # when the results are forgotten (Unix time): asking /report again keeps that moment


@dataclass
class Runtime:
    settings: Settings
    # Makes the Optimizely client on first use: a server answers tools/list without an HTTP stack loaded.
    connect: Callable[[], OptimizelyClient]
    guard: Guard
    # Experiment results by (token, experiment, window, baseline), for OPT_MCP_RESULTS_CACHE_SECONDS: a model asking
    # twice in a row does not spend the results endpoint's 20 requests a minute twice (nor do two replicas).
    store: Store = field(default_factory=MemoryStore)
    # API pages a list result was cut from; a cursor that resumes inside one reuses it instead of fetching it again.
    _pages: OrderedDict[str, tuple[float, FlagsPage]] = field(default_factory=OrderedDict)
    _client: OptimizelyClient | None = None

    @property
    def client(self) -> OptimizelyClient:
        if self._client is None:
            self._client = self.connect()
        return self._client

    async def aclose(self) -> None:
        """Close the client, if one was ever made."""
        if self._client is not None:
            await self._client.aclose()

    async def flags_page(self, project_id: int, link: str, *, resuming: bool) -> FlagsPage:
        """The API page at ``link``; when ``resuming`` inside a page fetched moments ago, that same page."""
        now = time.monotonic()
        if resuming and link in self._pages and now - self._pages[link][0] < PAGE_MEMORY_SECONDS:
            return self._pages[link][1]
        page = await self.client.follow_flags_link(project_id, link)
        self._pages[link] = (now, page)
        self._pages.move_to_end(link)
        while len(self._pages) > PAGE_MEMORY:
            self._pages.popitem(last=False)
        return page

    async def experiment_results(
        self, experiment_id: int, start: datetime | None, end: datetime | None, baseline: str | None, *, report: bool
    ) -> Answer:
        """An experiment's results and, when ``report``, Optimizely's inferred outcome over the same window and
        baseline, from the last few seconds' answer to the same question when there is one. The cache is keyed by
        the token that asked: one person never sees an answer fetched with another's token.

        ``/report`` is a legacy endpoint: its failure leaves the results standing, with the reason. The results are
        then remembered as usual, but the report is asked again on the next question (a passing failure must not
        hide the outcome for the cache's lifetime, and the results' budget of 20 a minute is not spent on it)."""
        key = f"results:{self.client.owner}:{experiment_id}:{start}:{end}:{baseline}:{'report' if report else '-'}"
        window = {
            "start_time": start.isoformat() if start else None,
            "end_time": end.isoformat() if end else None,
            "baseline_variation_id": baseline,
        }
        cached = await self._cached(key)
        if cached is not None and cached.report_error is None:
            return Answer(ResultsResponse(cached.state, cached.results), cached.outcome)
        if cached is not None:
            results, expires = ResultsResponse(cached.state, cached.results), cached.expires
        else:
            results = await self.client.get_experiment_results(experiment_id, **window)
            expires = time.time() + self.settings.results_cache_seconds
        outcome = error = None
        if report and results.state == "ready":
            try:
                found = await self.client.get_experiment_report(experiment_id, **window)
                outcome = found.inferred_outcome if found else None
            except OptimizelyError as exc:
                error = failure(exc)
        # "still computing" must be asked again, not remembered; nor is anything past the results' own lifetime.
        ttl = expires - time.time()
        if results.state != "processing" and self.settings.results_cache_seconds > 0 and ttl > 0:
            value = _Remembered(
                state=results.state,
                results=results.results,
                outcome=outcome,
                report_error=error,
                expires=expires,
            ).model_dump_json(by_alias=True)
            with contextlib.suppress(StoreDown):  # the answer stands; the next question asks Optimizely again
                await self.store.put(key, value, ttl)
        return Answer(results, outcome, error)

    async def _cached(self, key: str) -> _Remembered | None:
        try:
            value = await self.store.get(key)
        except StoreDown:
            return None  # reads carry on without the cache
        if value is None:
            return None
        return _Remembered.model_validate_json(value)

    def project(self, project_id: int | None) -> int:
        """The project a call is about: the argument, else the configured default."""
        chosen = project_id if project_id is not None else self.settings.default_project_id
        if chosen is None:
            raise ToolError(
                "project_id is required: no default project is configured (OPTIMIZELY_PROJECT_ID). "
                "Call list_projects to find the id."
            )
        return chosen


class Runtimes(ABC):
    """Where a hosted server finds the calling person's Runtime (``opt_mcp.people.People``). A base class, not a
    runtime-checkable Protocol: every tool call asks, and a Protocol's isinstance check inspects attributes each
    time (2 % of a hosted server's CPU)."""

    @abstractmethod
    def runtime(self, ctx: Context[Any, Any]) -> Runtime: ...


def runtime(ctx: Context[Any, Any]) -> Runtime:
    """What this call runs with: the server's one Runtime (stdio), or the calling person's (hosted)."""
    value = ctx.request_context.lifespan_context
    if isinstance(value, Runtime):
        return value
    if isinstance(value, Runtimes):
        return value.runtime(ctx)
    raise TypeError("opt-mcp tools need the opt-mcp server's lifespan")  # pragma: no cover - a wiring mistake


def failure(exc: OptimizelyError) -> str:
    """How a request failed, in a few words: the status (or no response) and Optimizely's message, shortened."""
    status = f"HTTP {exc.status}" if exc.status is not None else "no response"
    message = exc.message if len(exc.message) <= _REASON_CHARACTERS else exc.message[:_REASON_CHARACTERS] + "…"
    return f"{status}: {message.rstrip('.')}"


class ApiToolError(ToolError):
    """A tool error that is Optimizely's answer: its status and ``uuid`` ride along for the audit record."""

    def __init__(self, message: str, *, status: int | None, uuid: str | None) -> None:
        super().__init__(message)
        self.status, self.uuid = status, uuid


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn Optimizely and argument failures, and keys that name nothing, into tool errors: status, message, uuid,
    and the next step."""
    try:
        yield
    except OptimizelyError as exc:
        message = f"Optimizely refused or failed the request. {exc}"
        raise ApiToolError(message, status=exc.status, uuid=exc.uuid) from None
    except NotFound as exc:
        raise ToolError(str(exc)) from None
    except ValueError as exc:
        raise ToolError(str(exc)) from None
