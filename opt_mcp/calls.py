"""What one tool call did, recorded as it happens by the code that does it (the API client counts its requests,
through the hook the server gives it; the budget notes the size of the result it let through) and read by the
call's log line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class CallRecord:
    """What one tool call did: requests sent to Optimizely (each attempt counts), and its result's size in tokens
    as the budget measured it (None when the result did not go through the budget: errors)."""

    api_calls: int = 0
    result_tokens: int | None = None


_record: ContextVar[CallRecord | None] = ContextVar("opt_mcp_call_record", default=None)


@contextmanager
def recording() -> Iterator[CallRecord]:
    """Record what this task, and the tasks it starts, do for one call."""
    record = CallRecord()
    reset = _record.set(record)
    try:
        yield record
    finally:
        _record.reset(reset)


def note_api_call() -> None:
    """Called for each request the API client sends (its ``on_request`` hook, installed by the server)."""
    if (record := _record.get()) is not None:
        record.api_calls += 1


def note_result_tokens(tokens: int) -> None:
    """Called by the budget with the size of the result it let through (the log need not measure it again)."""
    if (record := _record.get()) is not None:
        record.result_tokens = tokens
