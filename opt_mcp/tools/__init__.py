"""The MCP tools, grouped by resource.

These modules (and ``prompts``, ``resources``) do without ``from __future__ import annotations``: the SDK reads
each registered function's type hints several times, and string annotations cost an ``eval`` every time (about
10 ms of every start-up)."""
