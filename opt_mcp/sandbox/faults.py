"""Fault injection for the sandbox, and the log of what reached it.

HTTP-level faults (a status, latency, a malformed, truncated or empty body) are applied inside the ASGI app, so they
work in process and on a port alike. Transport-level faults (a refused connection, a timeout, a reset) can only be
simulated in process: ``FaultTransport`` raises the exception httpx itself would raise.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import httpx

FaultKind = Literal["status", "latency", "malformed", "truncated", "empty", "connect", "timeout", "reset"]
TRANSPORT_FAULTS = frozenset({"connect", "timeout", "reset"})


@dataclass
class Fault:
    """One injected fault.

    ``path`` is a regular expression searched in the request path; ``method`` limits it to one method.
    ``times`` is how many matching requests it affects (None: all of them). ``after`` applies a ``status``
    fault after the request was processed (the change is made, the answer is lost), otherwise before.
    For ``timeout`` and ``reset`` the request is processed first, as on a real network where the answer is what
    goes missing; ``connect`` never reaches the app. ``skip`` lets that many matching requests through untouched
    first (a fault that starts later, e.g. on the read after a write). ``then`` (in process, HTTP-level faults)
    is called when the fault takes effect, before the request is processed: someone else's change arriving then.
    """

    kind: FaultKind
    path: str = ""
    method: str | None = None
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0
    times: int | None = 1
    after: bool = False
    skip: int = 0
    then: Callable[[], object] | None = None
    hits: int = 0
    skipped: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return re.search(self.path, path) is not None


class FaultPlan:
    """The faults in force; thread-safe, because a sandbox on a port serves from another thread."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str, *, transport: bool) -> Fault | None:
        """The first fault of the given layer that matches, counted as used."""
        with self._lock:
            for fault in self._faults:
                if (fault.kind in TRANSPORT_FAULTS) == transport and fault.matches(method, path):
                    if fault.skipped < fault.skip:
                        fault.skipped += 1
                        continue
                    fault.hits += 1
                    return fault
        return None


@dataclass(frozen=True)
class RequestRecord:
    """A request as the sandbox saw it: ``path`` exactly as sent (percent-encoding kept). The bearer token is never
    kept, only whether an accepted one was sent; nor are the OAuth token endpoint's secrets (masked ``***``)."""

    method: str
    path: str
    query: str
    body: bytes
    status: int
    authorized: bool
    at: float
    fault: str | None = None


class RequestLog:
    """The most recent requests (a sandbox serving for days must not grow without end)."""

    def __init__(self, keep: int = 20_000) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def records(self, method: str | None = None, path: str | None = None) -> list[RequestRecord]:
        """Requests so far, optionally of one method and with ``path`` (a regex) found in the path."""
        with self._lock:
            items = list(self._records)
        return [
            r
            for r in items
            if (method is None or r.method == method.upper()) and (path is None or re.search(path, r.path))
        ]


class FaultTransport(httpx.AsyncBaseTransport):
    """Wraps the in-process ASGI transport and raises transport-level faults the way httpx would."""

    def __init__(self, inner: httpx.AsyncBaseTransport, plan: FaultPlan, log: RequestLog) -> None:
        self._inner = inner
        self._plan = plan
        self._log = log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fault = self._plan.take(request.method, request.url.path, transport=True)
        if fault is not None and fault.kind == "connect":
            self._log.add(
                RequestRecord(
                    method=request.method,
                    path=request.url.path,
                    query=request.url.query.decode(),
                    body=b"",
                    status=0,
                    authorized=False,
                    at=time.time(),
                    fault="connect (never delivered)",
                )
            )
            raise httpx.ConnectError("Connection refused (sandbox fault)", request=request)
        response = await self._inner.handle_async_request(request)
        if fault is None:
            return response
        await response.aread()
        if fault.kind == "timeout":
            raise httpx.ReadTimeout("Timed out waiting for the answer (sandbox fault)", request=request)
        raise httpx.RemoteProtocolError("Server disconnected without a full answer (sandbox fault)", request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()
