"""``opt-mcp doctor``: is this machine ready to serve? The token (never shown), Optimizely's answer, the project,
the permissions a flag shows, the rate-limit headroom; then a client configuration ready to paste."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from opt_mcp.api.client import OptimizelyClient
from opt_mcp.api.errors import OptimizelyError
from opt_mcp.api.query import MAX_PER_PAGE, FlagFilters
from opt_mcp.config import Settings
from opt_mcp.settings import API_TOKEN, PROJECT_ID

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: Status, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    @property
    def healthy(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    def lines(self) -> list[str]:
        width = max((len(check.name) for check in self.checks), default=0)
        return [f"[{check.status:>4}] {check.name:<{width}}  {check.detail}" for check in self.checks]


async def diagnose(settings: Settings, client: OptimizelyClient) -> Report:
    """Every check, in order; a failure stops the checks that depend on it."""
    report = Report()
    if settings.uses_sandbox:
        report.add("token", "ok", "none needed: the embedded sandbox answers, with sample data (nothing real)")
    elif settings.has_token:
        detail = f"OPTIMIZELY_API_TOKEN is set ({len(settings.token)} characters, not shown)" if settings.token else ""
        if settings.oauth is not None:
            refreshed = (
                f"refreshed with OPTIMIZELY_REFRESH_TOKEN at {settings.oauth.token_url} "
                f"(OAuth client {settings.oauth.client_id}; neither token shown)"
            )
            detail = f"{detail}; {refreshed}" if detail else f"an access token is fetched and {refreshed}"
        report.add("token", "ok", detail)
    else:
        report.add("token", "fail", "OPTIMIZELY_API_TOKEN is not set: create one in Optimizely (Profile > API Access)")
        return report
    where = "the sandbox" if settings.uses_sandbox else settings.base_url
    started = time.perf_counter()
    try:
        projects = await client.list_projects()
    except OptimizelyError as exc:
        hint = " The token was refused: check it, or create a new one." if exc.status == 401 else ""
        report.add("api", "fail", f"{where}: {exc}{hint}")
        return report
    elapsed = (time.perf_counter() - started) * 1000
    flag_projects = [p for p in projects if p.is_flags_enabled is not False and p.id is not None]
    report.add(
        "api", "ok", f"{where} answered in {elapsed:.0f} ms; {len(flag_projects)} Feature Experimentation project(s)"
    )
    pid = settings.default_project_id
    if pid is None:
        listed = ", ".join(f"{p.id} ({p.name})" for p in flag_projects[:5]) or "none"
        report.add("project", "warn", f"OPTIMIZELY_PROJECT_ID is not set: each call must name one. Yours: {listed}")
        if not flag_projects:
            return report
        pid = flag_projects[0].id
        assert pid is not None
    try:
        environments = await client.list_environments(pid)
        page = await client.list_flags_page(pid, FlagFilters(), per_page=MAX_PER_PAGE)
    except OptimizelyError as exc:
        report.add("project", "fail", f"project {pid}: {exc}")
        return report
    keys = ", ".join(e.key for e in environments if not e.archived)
    report.add("project", "ok", f"{pid}: {page.total_count} flag(s); environments: {keys or 'none'}")
    if page.items:
        flag = page.items[0]
        links = {
            "update": flag.update_url,
            "archive": flag.archive_url,
            "unarchive": flag.unarchive_url,
            "delete": flag.delete_url,
        }
        may = [name for name, link in links.items() if link]
        toggles = [e.key for e in flag.environments.values() if e.enable_url or e.disable_url]
        status: Status = "ok" if may else "warn"
        detail = f"on flag {flag.key!r} you may: {', '.join(may) or 'only read'}"
        detail += f"; turn on/off in: {', '.join(toggles) or 'no environment'}"
        report.add("permissions", status, detail + ("" if may else " (writes will be refused)"))
    else:
        report.add("permissions", "warn", "the project has no flags to read permissions from")
    headroom = []
    for rate in client.rate_status():
        if rate.server_limit is not None:  # Optimizely's own count, from its answers' headers
            headroom.append(f"{rate.name} {rate.server_remaining} of {rate.server_limit} left")
        elif rate.windows:
            headroom.append(f"{rate.name} paced to {' and '.join(rate.windows)}")
    report.add("rate limits", "ok", "; ".join(headroom) or "no limits configured")
    return report


def client_configuration(settings: Settings, project_id: int | None) -> str:
    """A Claude Desktop entry that starts this very installation; the token is a placeholder, never the value."""
    # The script installed beside this interpreter first: the one a client must start is this installation's.
    command = shutil.which("opt-mcp", path=str(Path(sys.executable).parent)) or shutil.which("opt-mcp")
    launch = {"command": command, "args": ["serve"]} if command else {
        "command": sys.executable, "args": ["-m", "opt_mcp", "serve"]
    }  # fmt: skip
    env = {API_TOKEN.name: "<your Optimizely token>" if not settings.uses_sandbox else ""}
    if project_id is not None:
        env[PROJECT_ID.name] = str(project_id)
    entry = {"mcpServers": {"optimizely": {**launch, "env": env}}}
    return json.dumps(entry, indent=2)


def config_file_hint() -> str:
    """Where Claude Desktop keeps its configuration on this system."""
    if sys.platform == "darwin":
        return str(Path.home() / "Library/Application Support/Claude/claude_desktop_config.json")
    if sys.platform == "win32":
        return r"%APPDATA%\Claude\claude_desktop_config.json"
    return str(Path.home() / ".config/Claude/claude_desktop_config.json")
