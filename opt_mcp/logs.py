"""Log lines on stderr, never stdout (stdio's stdout is the protocol): text for a person at a terminal, JSON lines
for a log pipeline (``OPT_MCP_LOG_FORMAT=json``); and one line per tool call.

A tool call's line holds the tool's name, outcome, duration, the Optimizely requests it made and the size of its
result in tokens: never its arguments, which can carry a confirmation token or a user's text.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opt_mcp.budget import estimate_tokens
from opt_mcp.calls import recording
from opt_mcp.settings import LOG_FORMAT

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

log = logging.getLogger("opt_mcp.calls")


class JsonLines(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and a record's ``fields`` as keys of their own.

    A record whose text form is its fields as JSON (an audit line) carries a ``brief`` message for this form."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": getattr(record, "brief", None) or record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(environ: Mapping[str, str] = os.environ) -> None:
    """Send every log line to stderr in the format OPT_MCP_LOG_FORMAT asks for (a wrong one is a ConfigError); quiet
    httpx's line per request."""
    handler = logging.StreamHandler(sys.stderr)
    if LOG_FORMAT.read(environ) == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("opt-mcp %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request: the tool call's line counts them
    # The SDK's info lines repeat a failed call's message, which can quote the arguments: our line replaces them.
    logging.getLogger("mcp").setLevel(logging.WARNING)


class ToolCallLog:
    """Server middleware: one log line per tools/call, after it ends (with its error code if it failed)."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        name = ctx.params.get("name") if ctx.params else None
        # Still "cancelled" after the call: the client cancelled it (cancellation is not an Exception).
        fields: dict[str, Any] = {"tool": name if isinstance(name, str) else None, "outcome": "cancelled"}
        started = time.perf_counter()
        with recording() as record:
            try:
                result = await call_next(ctx)
            except Exception as exc:
                fields["outcome"] = f"protocol error {getattr(getattr(exc, 'error', None), 'code', type(exc).__name__)}"
                raise
            else:
                is_error = isinstance(result, dict) and result.get("isError") is True
                fields["outcome"] = "tool error" if is_error else "ok"
                fields["result_tokens"] = record.result_tokens
                if record.result_tokens is None:  # an error's text: small, measured here
                    fields["result_tokens"] = estimate_tokens(json.dumps(result, ensure_ascii=False, default=str))
            finally:
                fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
                fields["api_calls"] = record.api_calls
                self._write(fields)
        return result

    @staticmethod
    def _write(fields: dict[str, Any]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        size = f", {fields['result_tokens']} tokens" if "result_tokens" in fields else ""
        log.info(
            "%s %s in %.1f ms, %d API call(s)%s",
            fields["tool"],
            fields["outcome"],
            fields["duration_ms"],
            fields["api_calls"],
            size,
            extra={"fields": fields},
        )
