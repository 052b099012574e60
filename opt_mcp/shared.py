"""What the replicas of one deployment share: the single-use record of confirmation tokens, the rate-limit budget
of each Optimizely token, short-lived result caches and the audit stream. In this process (the default), or in
Redis (``OPT_MCP_REDIS_URL``) when several replicas must see the same state; nothing else in opt-mcp knows which.

Keys are namespaced (``opt-mcp:``) and expire. When Redis cannot be reached, each operation raises ``StoreDown``:
callers decide what fails closed (a write without the token ledger) and what carries on (a read without the shared
budget or the cache). The Redis client reconnects by itself once the server is back.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis

NAMESPACE = "opt-mcp:"
CACHE_ENTRIES = 1024  # in this process: the most recent answers, the older ones dropped
AUDIT_ENTRIES = 100_000  # the audit stream keeps about this many entries
AUDIT_DAYS = 30  # and expires this long after its last entry


class StoreDown(ConnectionError):
    """The shared store cannot be reached (Redis is down or unreachable). A ConnectionError: the API client's pacer,
    which knows no module of the application, catches that (``opt_mcp.api.ratelimit.SharedBudget``)."""


class Store(Protocol):
    """The operations replicas share. Every key is namespaced by the store; ``ttl`` is in seconds."""

    async def claim(self, key: str, ttl: float) -> bool:
        """Mark ``key`` taken until it expires: True for the first caller only, across every replica, atomically."""
        ...

    async def reserve(self, key: str, windows: Sequence[tuple[int, float]], member: str) -> float:
        """Count request ``member`` against ``key``'s sliding windows of (requests, seconds): 0 when it may go now
        (and is counted), else the seconds to wait before asking again (and nothing is counted)."""
        ...

    async def restamp(self, key: str, windows: Sequence[tuple[int, float]], member: str) -> None:
        """Count ``member`` from now on (its answer came): Optimizely counted it on arrival, after it was sent, and
        counting from the send could let the next request in early."""
        ...

    async def get(self, key: str) -> str | None:
        """A cached value, until it expires. A replica may answer from its own copy of a value it read or wrote,
        kept until the moment the shared one expires: for caches, never for state that must be current."""
        ...

    async def put(self, key: str, value: str, ttl: float) -> None:
        """Cache ``value`` for ``ttl`` seconds."""
        ...

    async def append(self, stream: str, entry: dict[str, Any]) -> None:
        """Add ``entry`` to a bounded stream (the audit trail)."""
        ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """The shared state of a single process: the default, and all one process needs."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._claimed: dict[str, float] = {}
        self._sent: dict[str, dict[str, float]] = {}  # key -> request -> when it counts from
        self._cache: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.streams: dict[str, deque[dict[str, Any]]] = {}

    async def claim(self, key: str, ttl: float) -> bool:
        now = self._clock()
        for stale in [k for k, until in self._claimed.items() if until <= now]:
            del self._claimed[stale]
        if key in self._claimed:
            return False
        self._claimed[key] = now + ttl
        return True

    async def reserve(self, key: str, windows: Sequence[tuple[int, float]], member: str) -> float:
        now = self._clock()
        sent = self._sent.setdefault(key, {})
        longest = max((seconds for _, seconds in windows), default=0.0)
        for gone in [m for m, at in sent.items() if at <= now - longest]:
            del sent[gone]
        times = sorted(sent.values())
        wait = 0.0
        for requests, seconds in windows:
            inside = [t for t in times if t > now - seconds]
            if len(inside) >= requests:
                wait = max(wait, inside[-requests] + seconds - now)
        if wait > 0:
            return wait
        sent[member] = now
        return 0.0

    async def restamp(self, key: str, windows: Sequence[tuple[int, float]], member: str) -> None:
        sent = self._sent.get(key, {})
        if member in sent:
            sent[member] = self._clock()

    async def get(self, key: str) -> str | None:
        found = self._cache.get(key)
        if found is None or found[0] <= self._clock():
            return None
        return found[1]

    async def put(self, key: str, value: str, ttl: float) -> None:
        self._cache[key] = (self._clock() + ttl, value)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def append(self, stream: str, entry: dict[str, Any]) -> None:
        self.streams.setdefault(stream, deque(maxlen=AUDIT_ENTRIES)).append(entry)

    async def aclose(self) -> None:
        return None


# One sliding window per key: drop what left the window, then either count this request in every window (0) or
# say how long until the oldest request that blocks it leaves (milliseconds). Redis's clock, not the replicas'.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local blocker = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    wait = math.max(wait, tonumber(blocker[2]) + window - now)
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i + 1]))
end
return 0
"""
_RESTAMP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now, ARGV[1])
end
return 0
"""


class RedisStore:
    """The shared state in Redis, for replicas behind a load balancer (``pip install 'opt-mcp[redis]'``)."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        from redis.asyncio import Redis  # only a deployment with Redis needs the package

        self._redis: Redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False, decode_responses=True
        )
        self._near: OrderedDict[str, tuple[float, str]] = OrderedDict()  # cached values read or written here
        self._reserve = self._redis.register_script(_RESERVE)
        self._restamp = self._redis.register_script(_RESTAMP)

    def __repr__(self) -> str:
        return "RedisStore()"  # the URL may hold a password

    async def _run(self, operation: Any) -> Any:
        from redis.exceptions import ConnectionError as Unreachable
        from redis.exceptions import TimeoutError as Slow

        try:
            return await operation
        except (Unreachable, Slow, OSError) as exc:
            raise StoreDown(f"Redis is unreachable ({type(exc).__name__})") from None

    async def claim(self, key: str, ttl: float) -> bool:
        done = await self._run(self._redis.set(NAMESPACE + key, "1", nx=True, px=max(1, int(ttl * 1000))))
        return bool(done)

    async def reserve(self, key: str, windows: Sequence[tuple[int, float]], member: str) -> float:
        arguments: list[Any] = [member]
        for requests, seconds in windows:
            arguments += [requests, int(seconds * 1000)]
        wait = await self._run(self._reserve(keys=self._window_keys(key, windows), args=arguments))
        return float(wait) / 1000

    async def restamp(self, key: str, windows: Sequence[tuple[int, float]], member: str) -> None:
        await self._run(self._restamp(keys=self._window_keys(key, windows), args=[member]))

    @staticmethod
    def _window_keys(key: str, windows: Sequence[tuple[int, float]]) -> list[str]:
        return [f"{NAMESPACE}{key}:{seconds:g}s" for _, seconds in windows]

    async def get(self, key: str) -> str | None:
        near = self._near.get(key)
        if near is not None and near[0] > time.monotonic():
            return near[1]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(NAMESPACE + key)
            pipe.pttl(NAMESPACE + key)
            value, left = await self._run(pipe.execute())
        if value is None:
            return None
        if left > 0:
            self._keep_near(key, str(value), left / 1000)
        return str(value)

    async def put(self, key: str, value: str, ttl: float) -> None:
        await self._run(self._redis.set(NAMESPACE + key, value, px=max(1, int(ttl * 1000))))
        self._keep_near(key, value, ttl)

    def _keep_near(self, key: str, value: str, ttl: float) -> None:
        # A cached value is read again and again while it lasts: this replica keeps a copy until the moment Redis
        # forgets it, and asks Redis no more (a round trip a read was 3 % of a replica's CPU under bench/load.py).
        self._near[key] = (time.monotonic() + ttl, value)
        self._near.move_to_end(key)
        while len(self._near) > CACHE_ENTRIES:
            self._near.popitem(last=False)

    async def append(self, stream: str, entry: dict[str, Any]) -> None:
        name = NAMESPACE + stream
        fields = {"entry": json.dumps(entry, ensure_ascii=False, default=str)}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(name, fields, maxlen=AUDIT_ENTRIES, approximate=True)  # type: ignore[arg-type]
            pipe.expire(name, AUDIT_DAYS * 86_400)
            await self._run(pipe.execute())

    async def aclose(self) -> None:
        await self._redis.aclose()
