"""What a request asks Optimizely and what some answers are, apart from the client that sends them (and its
HTTP stack): the tools build queries with these before any request is made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from opt_mcp.api.models import ExperimentResults

MAX_PER_PAGE = 100
# Keys per key_list request: short enough for any URL limit, one page each.
KEY_LIST_CHUNK = 50


@dataclass(frozen=True)
class FlagFilters:
    """Filters of ``GET /projects/{project_id}/flags``.

    Multi-valued filters are sent comma-joined; a value starting with ``!`` excludes (``rule_type=["!a/b"]``).
    """

    archived: bool | None = None
    query: str | None = None
    key_list: Sequence[str] = ()
    environment: Sequence[str] = ()
    enabled: bool | None = None
    rule_type: Sequence[str] = ()
    rule_status: Sequence[str] = ()
    environment_status: Sequence[str] = ()
    environment_type: Sequence[str] = ()
    sort: Sequence[str] = ()
    owner_user_id: str | None = None
    team_ids: Sequence[str] = ()

    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in ("archived", "enabled"):
            value = getattr(self, name)
            if value is not None:
                out[name] = "true" if value else "false"
        for name in ("query", "owner_user_id"):
            value = getattr(self, name)
            if value:
                out[name] = value
        for name in (
            "key_list",
            "environment",
            "rule_type",
            "rule_status",
            "environment_status",
            "environment_type",
            "sort",
            "team_ids",
        ):
            values = getattr(self, name)
            if values:
                out[name] = ",".join(values)
        return out


@dataclass(frozen=True)
class ResultsResponse:
    """Experiment results, or why there are none yet: 202 = still computing, 204 = no data."""

    state: Literal["ready", "processing", "no_data"]
    results: ExperimentResults | None = None
