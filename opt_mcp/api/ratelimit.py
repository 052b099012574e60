"""Client-side pacing to Optimizely's published rate limits, and what its rate-limit headers say.

Optimizely publishes limits (Flags API: 2 requests/s and 120/min; v2: 100/min; v2 results: 20/min) but neither
spec declares a 429 or a header, so opt-mcp paces itself with sliding windows and treats ``X-RATELIMIT-*`` and
``Retry-After`` as hints when they are present.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Protocol

log = logging.getLogger("opt_mcp.api")

# A reset value above this is a Unix timestamp; below, a number of seconds (both are seen in the wild).
_EPOCH_THRESHOLD = 1_000_000_000


class SharedBudget(Protocol):
    """Where the replicas of one deployment count their requests against the same windows (opt-mcp passes its
    shared store, ``opt_mcp.shared.Store``, which has these operations). Stated here, by the pacer that uses it, so
    that the client depends on no application module.

    Either operation raises ``ConnectionError`` when the budget cannot be reached (``opt_mcp.shared.StoreDown`` is
    one): the pacer then paces this process alone, and a request counted from its send stays counted.
    """

    async def reserve(self, key: str, windows: Sequence[tuple[int, float]], member: str) -> float:
        """Count request ``member`` against ``key``'s windows of (requests, seconds): 0 when it may go now (and is
        counted), else the seconds to wait before asking again (and nothing is counted)."""
        ...

    async def restamp(self, key: str, windows: Sequence[tuple[int, float]], member: str) -> None:
        """Count ``member`` from now on: its answer came."""
        ...


@dataclass(frozen=True)
class Window:
    """At most ``requests`` in any ``seconds``-long stretch of time."""

    requests: int
    seconds: float


@dataclass(frozen=True)
class RateLimits:
    """Pacing per class of endpoint. A request to the results endpoints counts against ``v2`` too."""

    flags: tuple[Window, ...] = (Window(2, 1.0), Window(120, 60.0))
    v2: tuple[Window, ...] = (Window(100, 60.0),)
    results: tuple[Window, ...] = (Window(20, 60.0),)

    @classmethod
    def unlimited(cls) -> RateLimits:
        """No client-side pacing (tests against a sandbox that does not limit)."""
        return cls(flags=(), v2=(), results=())


@dataclass
class RateStatus:
    """The current budget of one class of endpoint, as paced here and as Optimizely last reported it."""

    name: str
    windows: list[str]
    local_remaining: int | None
    server_limit: int | None = None
    server_remaining: int | None = None
    server_reset_at: float | None = None
    blocked_for_seconds: float = 0.0


@dataclass
class Pacer:
    """Sliding-window pacing for one class of endpoint; FIFO among concurrent callers."""

    name: str
    windows: tuple[Window, ...]
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _sent: deque[float] = field(default_factory=deque)
    _blocked_until: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _server_limit: int | None = None
    _server_remaining: int | None = None
    _server_reset_at: float | None = None
    # The budget every replica of a deployment draws from, for this token and class of endpoint.
    shared: SharedBudget | None = None
    shared_key: str = ""
    _members: dict[float, str] = field(default_factory=dict)  # local stamp -> its name in the shared budget

    async def acquire(self) -> float | None:
        """Wait until a request may be sent, then count it as sent; its stamp, for ``settle``."""
        async with self._lock:
            while True:
                delay = self._delay(self.clock())
                if delay <= 0:
                    break
                await self.sleep(delay)
            if not self.windows:
                return None
            member = await self._shared_turn(self.shared) if self.shared is not None else None
            stamp = self.clock()
            self._sent.append(stamp)
            if member is not None:
                longest = max(window.seconds for window in self.windows)
                for unsettled in [s for s in self._members if s < stamp - longest]:  # their requests failed
                    del self._members[unsettled]
                self._members[stamp] = member
            return stamp

    async def _shared_turn(self, shared: SharedBudget) -> str | None:
        """Wait for a place in the budget the replicas share (this process's own pacing already holds); the name
        the request is counted under, for ``settle_shared``."""
        windows = [(window.requests, window.seconds) for window in self.windows]
        member = secrets.token_hex(8)
        while True:
            try:
                wait = await shared.reserve(f"budget:{self.shared_key}", windows, member)
            except ConnectionError as exc:
                # Reads carry on without the shared budget: this process still keeps to the limits on its own.
                log.warning("rate-limit budget not shared for now (%s): pacing this process alone", exc)
                return None
            if wait <= 0:
                return member
            await self.sleep(wait)

    async def settle_shared(self, stamp: float | None) -> None:
        """``settle`` for the shared budget: count the request from its answer there too."""
        member = self._members.pop(stamp, None) if stamp is not None else None
        if member is None or self.shared is None:
            return
        windows = [(window.requests, window.seconds) for window in self.windows]
        try:
            await self.shared.restamp(f"budget:{self.shared_key}", windows, member)
        except ConnectionError:
            return  # counted from its send: a little early, never lost

    def settle(self, stamp: float | None) -> None:
        """Count a request from when its answer came rather than when it left. The server counted it on arrival,
        somewhere in between: pacing from the send time can run ahead of the server's window by the network delay
        and draw a 429; pacing from the answer never does."""
        if stamp is None:
            return
        try:
            self._sent.remove(stamp)
        except ValueError:
            return  # already out of every window
        bisect.insort(self._sent, self.clock())

    def _delay(self, now: float) -> float:
        delay = self._blocked_until - now
        if not self.windows:
            return delay
        longest = max(w.seconds for w in self.windows)
        while self._sent and self._sent[0] <= now - longest:
            self._sent.popleft()
        for window in self.windows:
            in_window = [t for t in self._sent if t > now - window.seconds]
            if len(in_window) >= window.requests:
                delay = max(delay, in_window[-window.requests] + window.seconds - now)
        return delay

    def block_for(self, seconds: float) -> None:
        """Hold every request of this class back for ``seconds`` (after a 429)."""
        self._blocked_until = max(self._blocked_until, self.clock() + seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Record the ``X-RATELIMIT-*`` headers of a response, when it has them."""
        limit = _int_header(headers, "x-ratelimit-limit")
        remaining = _int_header(headers, "x-ratelimit-remaining")
        reset = reset_delay(headers)
        if limit is not None:
            self._server_limit = limit
        if remaining is not None:
            self._server_remaining = remaining
        if reset is not None:
            self._server_reset_at = time.time() + reset

    def status(self) -> RateStatus:
        now = self.clock()
        local: int | None = None
        for window in self.windows:
            used = sum(1 for t in self._sent if t > now - window.seconds)
            left = max(0, window.requests - used)
            local = left if local is None else min(local, left)
        return RateStatus(
            name=self.name,
            windows=[f"{w.requests}/{w.seconds:g}s" for w in self.windows],
            local_remaining=local,
            server_limit=self._server_limit,
            server_remaining=self._server_remaining,
            server_reset_at=self._server_reset_at,
            blocked_for_seconds=max(0.0, self._blocked_until - now),
        )


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None


def reset_delay(headers: Mapping[str, str]) -> float | None:
    """Seconds until ``X-RATELIMIT-RESET`` (a Unix time or a number of seconds), or None."""
    value = headers.get("x-ratelimit-reset")
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number > _EPOCH_THRESHOLD:
        return max(0.0, number - time.time())
    return max(0.0, number)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait after a 429: ``Retry-After`` (seconds or HTTP date), else ``X-RATELIMIT-RESET``."""
    value = headers.get("retry-after")
    if value is not None:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    return reset_delay(headers)
