"""The sandbox's endpoints: Optimizely's Flags API v1 and the v2 endpoints opt-mcp uses, as they behave.

Quirks kept on purpose, because the server must cope with them: list links are relative arrays with a ``#page``
fragment and absent on the last page; PATCH silently ignores read-only and unknown paths; a 404 for a flag has an
empty body; archiving pauses running environments; v2 lists are bare arrays paged by ``Link`` headers; results
may end earlier than asked.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import jsonpatch
import jsonpointer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from opt_mcp.sandbox import results as results_model
from opt_mcp.sandbox.config import Readings
from opt_mcp.sandbox.store import (
    EXPERIMENT_TYPES,
    MAX_RULES_PER_RULESET,
    RULE_TYPES,
    VARIABLE_TYPES,
    WRITABLE_FLAG_FIELDS,
    WRITABLE_RULE_FIELDS,
    WRITABLE_RULESET_FIELDS,
    EnvironmentRecord,
    FlagRecord,
    ProjectRecord,
    Store,
    environment_resource_json,
    flag_json,
    project_json,
    ruleset_json,
    timestamp,
)

FLAGS_DEFAULT_PER_PAGE = 100
FLAGS_MAX_PER_PAGE = 100
V2_DEFAULT_PER_PAGE = 25
V2_MAX_PER_PAGE = 100
_VARIABLE_FIELDS = ("key", "description", "type", "default_value")
_SORT_FIELDS = (
    "name",
    "key",
    "created_time",
    "updated_time",
    "enabled_in_environment",
    "rules_in_environment",
    "created_by_user_email",
)


class ApiError(Exception):
    """Raised by a handler; the gateway renders it in the style of the API that was called."""

    def __init__(self, status: int, title: str, detail: str = "", *, empty: bool = False) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.empty = status, title, detail, empty


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")), status_code=status, media_type="application/json", headers=headers
    )


def problem_response(status: int, title: str, detail: str) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "uuid": str(uuid.uuid4())}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def v2_error_response(status: int, message: str) -> Response:
    codes = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited"}
    body = {"code": codes.get(status, str(status)), "message": message, "uuid": str(uuid.uuid4())}
    return JSONResponse(body, status_code=status)


class Endpoints:
    """Handlers over a Store. ``seed`` and ``clock`` make v2 results reproducible; ``readings`` pick how the
    behaviours the specs leave open are answered."""

    def __init__(
        self,
        store: Store,
        *,
        seed: int,
        clock: Callable[[], datetime] = results_model.utc_now,
        readings: Readings | None = None,
    ) -> None:
        self.store = store
        self.seed = seed
        self.clock = clock
        self.readings = readings or Readings()

    # --------------------------------------------------------------------------------------------------------------
    # Lookups
    # --------------------------------------------------------------------------------------------------------------

    @staticmethod
    def _visible(request: Request, project_id: int) -> bool:
        """Whether the request's token may see the project (the gateway puts a token's grant in the request)."""
        grant: frozenset[int] | None = getattr(request.state, "grant", None)
        return grant is None or project_id in grant

    def _project(self, request: Request, *, flags: bool = True) -> ProjectRecord:
        raw = request.path_params["project_id"]
        project = self.store.projects.get(int(raw)) if str(raw).isdigit() else None
        if project is None or not self._visible(request, project.id):
            raise ApiError(404, "Not Found", f"Project {raw} was not found or you do not have access to it.")
        if flags and not project.is_flags_enabled:
            raise ApiError(400, "Bad Request", f"Project {raw} is not a Feature Experimentation project.")
        return project

    def _flag(self, project: ProjectRecord, key: str) -> FlagRecord:
        flag = project.flags.get(key)
        if flag is None:
            raise ApiError(404, "Not Found", empty=True)  # the API documents 404 as "Not found. No content"
        return flag

    def _environment(self, project: ProjectRecord, key: str) -> EnvironmentRecord:
        env = project.environment(key)
        if env is None:
            raise ApiError(404, "Not Found", f"Environment {key} was not found in project {project.id}.")
        return env

    # --------------------------------------------------------------------------------------------------------------
    # Flags
    # --------------------------------------------------------------------------------------------------------------

    async def list_flags(self, request: Request) -> Response:
        project = self._project(request)
        query = request.query_params
        per_page = _int_param(query.get("per_page"), "per_page", FLAGS_DEFAULT_PER_PAGE, 1, FLAGS_MAX_PER_PAGE)
        window = _int_param(query.get("page_window"), "page_window", 1, 1, 10)
        filters = _FlagQuery.of(query, self.readings)
        flags = [flag for flag in project.flags.values() if filters.matches(project, flag)]
        for spec in reversed(_multi(query, "sort")):
            field, _, direction = spec.partition(":")
            if field not in _SORT_FIELDS or direction not in ("asc", "desc", ""):
                raise ApiError(400, "Bad Request", f"Invalid sort value {spec!r}: use one of {', '.join(_SORT_FIELDS)}")
            flags.sort(key=_sort_key(project, filters, field), reverse=direction == "desc")
        total = len(flags)
        total_pages = max(1, math.ceil(total / per_page))
        page = 1
        if query.get("page_token"):
            page = _decode_page_token(query["page_token"], per_page)
        elif query.get("page_number"):
            page = _int_param(query.get("page_number"), "page_number", 1, 1, 10**9)
        items = flags[(page - 1) * per_page : page * per_page]

        kept = [(k, v) for k, v in query.multi_items() if k not in ("page_token", "page_number")]
        base = f"/projects/{project.id}/flags"

        def link(target: int) -> str:
            if target == 1:
                return f"{base}?{urlencode(kept, safe=',!:/')}" if kept else base
            params = [*kept, ("page_token", _page_token(target, per_page, total_pages))]
            return f"{base}?{urlencode(params, safe=',!:/')}#{target}"

        body: dict[str, Any] = {
            "page": page,
            "fetch_flag_url": f"{base}/{{flag_key}}",
            "total_pages": total_pages,
            "first_url": link(1),
            "count": len(items),
            "last_url": link(total_pages),
            "url": link(page),
            "items": [flag_json(project, flag) for flag in items],
            "total_count": total,
            "create_url": base,
        }
        nexts = [link(p) for p in range(page + 1, min(total_pages, page + window) + 1)]
        prevs = [link(p) for p in range(page - 1, max(0, page - window), -1)]
        if nexts:
            body["next_url"] = nexts
        if prevs:
            body["prev_url"] = prevs
        return json_response(body)

    async def get_flag(self, request: Request) -> Response:
        project = self._project(request)
        return json_response(flag_json(project, self._flag(project, request.path_params["flag_key"])))

    async def delete_flag(self, request: Request) -> Response:
        project = self._project(request)
        key = request.path_params["flag_key"]
        self._flag(project, key)
        del project.flags[key]
        return Response(status_code=204)

    async def patch_flags(self, request: Request) -> Response:
        project = self._project(request)
        operations = await _json_patch_body(request)
        touched: dict[str, FlagRecord] = {}
        kept_ops: list[dict[str, Any]] = []
        for index, op in enumerate(operations):
            parts = _pointer(op.get("path"), f"operation {index}: path")
            if not parts:
                raise ApiError(400, "Bad Request", f"operation {index}: path must start with /<flag_key>/")
            key = parts[0]
            if key not in project.flags:
                raise ApiError(404, "Not Found", f"Flag {key} was not found in project {project.id}.")
            touched[key] = project.flags[key]
            from_parts = _pointer(op["from"], f"operation {index}: from") if "from" in op else None
            # The API ignores read-only and unknown properties without a word: so does the sandbox.
            if _writable_flag_path(parts) and (from_parts is None or _writable_flag_path(from_parts)):
                kept_ops.append(op)
        for key, flag in touched.items():
            if flag.fields.get("archived") and any(_pointer(op["path"], "path")[0] == key for op in kept_ops):
                raise ApiError(409, "Conflict", f"Flag {key} is archived; unarchive it before updating it.")
        document = {key: _writable_flag(flag) for key, flag in touched.items()}
        patched = _apply_patch(document, kept_ops)
        now = timestamp()
        for key, flag in touched.items():
            new = patched.get(key)
            if not isinstance(new, dict):
                raise ApiError(400, "Bad Request", f"{key}: a flag cannot be removed or replaced as a whole.")
            _validate_flag(key, new)
            if new != document[key]:
                step = 1
                if self.readings.revision_step == "operation":
                    step = sum(1 for op in kept_ops if _pointer(op["path"], "path")[0] == key)
                _commit_flag(project, flag, new, now, step)
        return json_response({key: flag_json(project, flag) for key, flag in touched.items()})

    async def archive_flags(self, request: Request) -> Response:
        return await self._set_archived(request, archived=True)

    async def unarchive_flags(self, request: Request) -> Response:
        return await self._set_archived(request, archived=False)

    async def _set_archived(self, request: Request, *, archived: bool) -> Response:
        project = self._project(request)
        body = await _json_body(request)
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise ApiError(400, "Bad Request", 'The body must be {"keys": ["flag_key", ...]} with at least one key.')
        missing = [k for k in keys if k not in project.flags]
        if missing:
            raise ApiError(404, "Not Found", f"Flags not found in project {project.id}: {', '.join(missing)}")
        now = timestamp()
        for key in keys:
            flag = project.flags[key]
            if bool(flag.fields.get("archived")) != archived:
                _archive(flag, archived, now)
                flag.fields["revision"] += 1
                flag.fields["updated_time"] = now
        return json_response({key: flag_json(project, project.flags[key]) for key in keys})

    # --------------------------------------------------------------------------------------------------------------
    # Rulesets and environments
    # --------------------------------------------------------------------------------------------------------------

    def _ruleset_target(self, request: Request) -> tuple[ProjectRecord, FlagRecord, EnvironmentRecord]:
        project = self._project(request)
        flag = self._flag(project, request.path_params["flag_key"])
        env = self._environment(project, request.path_params["environment_key"])
        return project, flag, env

    async def get_ruleset(self, request: Request) -> Response:
        project, flag, env = self._ruleset_target(request)
        return self._ruleset_response(project, flag, env)

    def _ruleset_response(self, project: ProjectRecord, flag: FlagRecord, env: EnvironmentRecord) -> Response:
        body = ruleset_json(project, flag, env)
        if self.readings.audience_conditions == "string":
            # The spec's other form: "everyone" for no audience, else the condition array as a JSON string.
            for rule in body["rules"].values():
                conditions = rule.get("audience_conditions") or []
                rule["audience_conditions"] = json.dumps(conditions) if conditions else "everyone"
        return json_response(body)

    async def patch_ruleset(self, request: Request) -> Response:
        project, flag, env = self._ruleset_target(request)
        operations = await _json_patch_body(request)
        if flag.fields.get("archived"):
            raise ApiError(409, "Conflict", f"Flag {flag.key} is archived; unarchive it before changing its rules.")
        ruleset = flag.rulesets[env.key]
        kept = [
            op
            for index, op in enumerate(operations)
            if _writable_ruleset_path(_pointer(op.get("path"), f"operation {index}: path"))
            and ("from" not in op or _writable_ruleset_path(_pointer(op["from"], f"operation {index}: from")))
        ]
        document = {
            "rules": {k: {f: copy.deepcopy(v) for f, v in r.items() if f in WRITABLE_RULE_FIELDS}
                      for k, r in ruleset.rules.items()},
            "rule_priorities": list(ruleset.rule_priorities),
            "default_variation_key": ruleset.default_variation_key,
        }  # fmt: skip
        patched = _apply_patch(document, kept)
        _validate_ruleset(patched)
        if patched == document:
            return self._ruleset_response(project, flag, env)
        now = timestamp()
        rules: dict[str, dict[str, Any]] = {}
        for key, new in patched["rules"].items():
            old = ruleset.rules.get(key)
            rules[key] = self._merge_rule(project, ruleset.enabled, old, new, now)
        ruleset.rules = rules
        ruleset.rule_priorities = list(patched["rule_priorities"])
        ruleset.default_variation_key = patched["default_variation_key"]
        ruleset.revision += 1
        ruleset.updated_time = now
        return self._ruleset_response(project, flag, env)

    def _merge_rule(
        self, project: ProjectRecord, serving: bool, old: dict[str, Any] | None, new: dict[str, Any], now: str
    ) -> dict[str, Any]:
        if old is None:
            rule_id = self.store.new_id()
            rule: dict[str, Any] = {
                "id": rule_id,
                "urn": f"rules.flags.optimizely.com::{rule_id}",
                "revision": 1,
                "archived": False,
                "status": "draft",
                "created_time": now,
                "created_by_user_email": "api-user@example.com",
                "days_running": None,
                "layer_experiment_id": None,
                "fetch_results_ui_url": None,
                "description": "",
                "audience_conditions": [],
            }
            if new["type"] in EXPERIMENT_TYPES:
                rule["layer_id"] = 9300001000000 + self.store.new_id()
                rule["layer_experiment_id"] = 9300002000000 + self.store.new_id()
        else:
            if {k: v for k, v in old.items() if k in WRITABLE_RULE_FIELDS} == new:
                return old
            rule = copy.deepcopy(old)
            rule["revision"] += 1
        rule.update(copy.deepcopy(new))
        rule["updated_time"] = now
        for variation in rule.get("variations", {}).values():
            if "variation_id" not in variation:
                variation["variation_id"] = variation["id"] = self.store.new_id()
        rule["audience_ids"] = [c["audience_id"] for c in rule.get("audience_conditions", []) if isinstance(c, dict)]
        was_enabled = bool(old and old.get("enabled"))
        if rule.get("enabled") and not was_enabled and serving:
            _start_rule(project, rule)
        elif not rule.get("enabled") and was_enabled and rule["status"] == "running":
            rule["status"] = "concluded" if rule["type"] in EXPERIMENT_TYPES else "paused"
        return rule

    async def enable_ruleset(self, request: Request) -> Response:
        return await self._toggle(request, enabled=True)

    async def disable_ruleset(self, request: Request) -> Response:
        return await self._toggle(request, enabled=False)

    async def _toggle(self, request: Request, *, enabled: bool) -> Response:
        project, flag, env = self._ruleset_target(request)
        if flag.fields.get("archived"):
            raise ApiError(409, "Conflict", f"Flag {flag.key} is archived; unarchive it before turning it on or off.")
        ruleset = flag.rulesets[env.key]
        if ruleset.enabled != enabled:
            ruleset.enabled = enabled
            ruleset.status = "running" if enabled else "paused"
            if enabled:
                for rule in ruleset.rules.values():
                    if rule.get("enabled") and rule["status"] in ("draft", "paused"):
                        _start_rule(project, rule)
            ruleset.revision += 1
            ruleset.updated_time = timestamp()
        if self.readings.toggle_answer == "no_content":
            return Response(status_code=204)
        return self._ruleset_response(project, flag, env)

    async def list_environments(self, request: Request) -> Response:
        project = self._project(request)
        query = request.query_params
        per_page = _int_param(query.get("per_page"), "per_page", FLAGS_DEFAULT_PER_PAGE, 1, FLAGS_MAX_PER_PAGE)
        envs = [env for env in project.environments if query.get("archived") != "true" or env.archived]
        if query.get("sort") == "priority:desc":
            envs = list(reversed(envs))
        url = f"/projects/{project.id}/environments"
        items = envs[:per_page]
        return json_response(
            {
                "url": url,
                "first_url": url,
                "last_url": url,
                "count": len(items),
                "page": 1,
                "total_count": len(envs),
                "total_pages": 1,
                "items": [environment_resource_json(project, env) for env in items],
            }
        )

    async def not_found(self, request: Request) -> Response:
        raise ApiError(404, "Not Found", f"No endpoint {request.method} {request.url.path}")

    # --------------------------------------------------------------------------------------------------------------
    # v2
    # --------------------------------------------------------------------------------------------------------------

    async def list_projects(self, request: Request) -> Response:
        query = request.query_params
        per_page = _int_param(query.get("per_page"), "per_page", V2_DEFAULT_PER_PAGE, 1, V2_MAX_PER_PAGE)
        page = _int_param(query.get("page"), "page", 1, 1, 10**6)
        projects = [p for p in self.store.projects.values() if self._visible(request, p.id)]
        last = max(1, math.ceil(len(projects) / per_page))
        items = projects[(page - 1) * per_page : page * per_page]
        headers: dict[str, str] = {}
        if len(projects) > per_page or page > 1:
            origin = f"{request.url.scheme}://{request.url.netloc}{request.url.path}"
            rels = [(page + 1, "next")] if page < last else []
            rels += [(last, "last")]
            rels += [(page - 1, "prev")] if page > 1 else []
            headers["Link"] = ", ".join(f'<{origin}?page={p}&per_page={per_page}>; rel="{rel}"' for p, rel in rels)
        return json_response([project_json(p) for p in items], headers=headers)

    async def get_project(self, request: Request) -> Response:
        return json_response(project_json(self._project(request, flags=False)))

    def _experiment_rule(self, request: Request) -> dict[str, Any]:
        raw = str(request.path_params["experiment_id"])
        found = self.store.experiment_index().get(int(raw)) if raw.isdigit() else None
        if found is None or not self._visible(request, found[0].id):
            raise ApiError(404, "Not Found", f"Experiment {raw} was not found or you do not have access to it.")
        return found[3]

    async def fetch_rule_by_experiment_id(self, request: Request) -> Response:
        """Flags API ``GET /projects/{project_id}/rules/{experiment_id}``: the rule an experiment id (its
        ``layer_experiment_id``) belongs to, as a ``Rule`` (a ruleset's rule plus its flag and environment)."""
        project = self._project(request)
        raw = str(request.path_params["experiment_id"])
        if not raw.isdigit():
            raise ApiError(400, "Bad Request", f"experiment_id must be an integer, not {raw!r}")
        found = self.store.experiment_index().get(int(raw))
        if found is None or found[0] is not project:
            raise ApiError(404, "Not Found", empty=True)  # the API documents 404 as "Not found. No content"
        _, flag, env_key, rule = found
        env = self._environment(project, env_key)
        rendered = ruleset_json(project, flag, env)["rules"][rule["key"]]
        return json_response(
            {
                **rendered,
                "flag_key": flag.key,
                "flag_name": flag.fields["name"],
                "environment_key": env.key,
                "environment_name": env.name,
            }
        )

    def _results(self, request: Request) -> dict[str, Any] | None:
        rule = self._experiment_rule(request)
        query = request.query_params
        baseline = query.get("baseline_variation_id")
        if baseline is not None and baseline not in {str(v["variation_id"]) for v in rule["variations"].values()}:
            raise ApiError(
                400, "Bad Request", f"baseline_variation_id {baseline} is not a variation of this experiment"
            )
        return results_model.experiment_results(
            rule,
            seed=self.seed,
            now=self.clock(),
            start_time=_time_param(query.get("start_time"), "start_time"),
            end_time=_time_param(query.get("end_time"), "end_time"),
            baseline_variation_id=baseline,
        )

    async def experiment_results(self, request: Request) -> Response:
        body = self._results(request)
        return Response(status_code=204) if body is None else json_response(body)

    async def experiment_report(self, request: Request) -> Response:
        body = self._results(request)
        if body is None:
            return Response(status_code=204)
        return json_response(
            {
                "experiment_id": body["experiment_id"],
                "start_time": body["start_time"],
                "end_time": body["end_time"],
                "inferred_outcome": results_model.experiment_report(body),
            }
        )


# ------------------------------------------------------------------------------------------------------------------
# Flags: filtering, sorting, paging
# ------------------------------------------------------------------------------------------------------------------


def _multi(query: Any, name: str) -> list[str]:
    """A multi-valued parameter: comma-joined, repeated, or both."""
    return [part for value in query.getlist(name) for part in value.split(",") if part]


def _select(spec: list[str], values: Iterable[str]) -> bool:
    present = set(values)
    wanted = {v for v in spec if not v.startswith("!")}
    excluded = {v[1:] for v in spec if v.startswith("!")}
    return (not wanted or bool(present & wanted)) and not (present & excluded)


def _env_type(env: EnvironmentRecord) -> str:
    return "production" if env.priority == 1 else "development"


@dataclass(frozen=True)
class _FlagQuery:
    """A list request's filters, read from its query string once (not once per flag)."""

    archived: str | None
    text: str | None
    keys: list[str]
    owner: str | None
    teams: set[str]
    environments: list[str]
    environment_types: list[str]
    enabled: str | None
    selections: tuple[tuple[str, list[str]], ...]  # environment_status, rule_type, rule_status when given
    scoped: bool  # enabled= and the selections look only at the environments environment= names

    @classmethod
    def of(cls, query: Any, readings: Readings) -> _FlagQuery:
        selections = tuple(
            (name, spec) for name in ("environment_status", "rule_type", "rule_status") if (spec := _multi(query, name))
        )
        unarchived_by_default = readings.archived_default == "unarchived"
        return cls(
            archived=query.get("archived") or ("false" if unarchived_by_default else None),
            text=(query.get("query") or "").lower() or None,
            keys=_multi(query, "key_list") if readings.key_list == "honoured" else [],
            owner=query.get("owner_user_id") or None,
            teams=set(_multi(query, "team_ids")),
            environments=_multi(query, "environment"),
            environment_types=_multi(query, "environment_type"),
            enabled=query.get("enabled"),
            selections=selections,
            scoped=readings.environment_scoping == "scoped",
        )

    def considered(self, project: ProjectRecord, flag: FlagRecord) -> list[tuple[EnvironmentRecord, Any]]:
        """The flag's environments that environment= and environment_type= look at."""
        return [
            (env, flag.rulesets[env.key])
            for env in project.environments
            if env.key in flag.rulesets
            and (not self.environments or _select(self.environments, [env.key]))
            and (not self.environment_types or _select(self.environment_types, [_env_type(env)]))
        ]

    def matches(self, project: ProjectRecord, flag: FlagRecord) -> bool:
        fields = flag.fields
        if self.archived is not None and (self.archived == "true") != bool(fields.get("archived")):
            return False
        if self.text:
            haystack = (fields["key"], fields["name"], fields.get("description") or "")
            if not any(self.text in part.lower() for part in haystack):
                return False
        if self.keys and fields["key"] not in self.keys:
            return False
        if self.owner and fields.get("owner_user_id") != self.owner:
            return False
        if self.teams and not self.teams & set(fields.get("team_ids") or []):
            return False
        if self.enabled is None and not self.selections:
            return True
        if self.scoped:
            envs = self.considered(project, flag)
        else:
            envs = [(env, flag.rulesets[env.key]) for env in project.environments if env.key in flag.rulesets]
        if self.enabled is not None and (self.enabled == "true") != any(rs.enabled for _, rs in envs):
            return False
        for name, spec in self.selections:
            if name == "environment_status":
                present = [rs.status for _, rs in envs]
            else:  # rule_type, rule_status
                present = [rule[name.removeprefix("rule_")] for _, rs in envs for rule in rs.rules.values()]
            if not _select(spec, present):
                return False
        return True


def _sort_key(project: ProjectRecord, filters: _FlagQuery, field: str) -> Callable[[FlagRecord], Any]:
    if field == "enabled_in_environment":
        return lambda flag: sum(rs.enabled for _, rs in filters.considered(project, flag))
    if field == "rules_in_environment":
        return lambda flag: sum(len(rs.rules) for _, rs in filters.considered(project, flag))
    if field in ("name", "key", "created_by_user_email"):
        return lambda flag: str(flag.fields.get(field, "")).lower()
    return lambda flag: flag.fields.get(field, "")


def _page_token(page: int, per_page: int, total_pages: int) -> str:
    # Opaque to clients, as Optimizely's are (theirs are pickles of "page|per_page|total").
    return base64.urlsafe_b64encode(f"sbx|{page}|{per_page}|{total_pages}".encode()).decode()


def _decode_page_token(token: str, per_page: int) -> int:
    try:
        tag, page, size, _ = base64.urlsafe_b64decode(token.encode()).decode().split("|")
        if tag != "sbx" or int(size) != per_page or int(page) < 1:
            raise ValueError(token)
        return int(page)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ApiError(400, "Bad Request", "Invalid page_token: follow next_url instead of building one.") from None


def _int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "Bad Request", f"{name} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, "Bad Request", f"{name} must be between {low} and {high}, not {value}")
    return value


def _time_param(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "Bad Request", f"{name} must be an ISO 8601 date-time, not {raw!r}") from None
    if moment.tzinfo is None:
        raise ApiError(400, "Bad Request", f"{name} must include a time zone, e.g. 2025-01-31T00:00:00Z")
    return moment


# ------------------------------------------------------------------------------------------------------------------
# Flags: JSON Patch
# ------------------------------------------------------------------------------------------------------------------


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(400, "Bad Request", "The request body is not valid JSON.") from None


async def _json_patch_body(request: Request) -> list[dict[str, Any]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json-patch+json":
        raise ApiError(415, "Unsupported Media Type", "Send JSON Patch as application/json-patch+json.")
    body = await _json_body(request)
    if not isinstance(body, list) or not body:
        raise ApiError(400, "Bad Request", "The body must be a non-empty JSON Patch array (RFC 6902).")
    for index, op in enumerate(body):
        if not isinstance(op, dict) or op.get("op") not in ("add", "remove", "replace", "move", "copy", "test"):
            raise ApiError(
                400, "Bad Request", f"operation {index}: op must be add, remove, replace, move, copy or test"
            )
        if op["op"] in ("add", "replace", "test") and "value" not in op:
            raise ApiError(400, "Bad Request", f"operation {index}: {op['op']} needs a value")
        if op["op"] in ("move", "copy") and "from" not in op:
            raise ApiError(400, "Bad Request", f"operation {index}: {op['op']} needs from")
    return body


def _pointer(path: Any, what: str) -> list[str]:
    if not isinstance(path, str):
        raise ApiError(400, "Bad Request", f"{what} must be a JSON Pointer string")
    try:
        return [str(part) for part in jsonpointer.JsonPointer(path).parts]
    except jsonpointer.JsonPointerException as exc:
        raise ApiError(400, "Bad Request", f"{what} is not a valid JSON Pointer: {exc}") from None


def _writable_flag_path(parts: list[str]) -> bool:
    if len(parts) < 2 or parts[1] not in WRITABLE_FLAG_FIELDS:
        return False
    if parts[1] == "variable_definitions" and len(parts) >= 4:
        return parts[3] in _VARIABLE_FIELDS and len(parts) == 4
    return True


def _writable_ruleset_path(parts: list[str]) -> bool:
    if not parts or parts[0] not in WRITABLE_RULESET_FIELDS:
        return False
    return not (parts[0] == "rules" and len(parts) >= 3 and parts[2] not in WRITABLE_RULE_FIELDS)


def _apply_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        result = jsonpatch.apply_patch(document, operations, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise ApiError(409, "Conflict", f"A test operation failed: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError) as exc:
        raise ApiError(400, "Bad Request", f"The patch cannot be applied: {exc}") from None
    if not isinstance(result, dict):
        raise ApiError(400, "Bad Request", "The patch cannot replace the whole document.")
    return result


def _writable_flag(flag: FlagRecord) -> dict[str, Any]:
    out = {name: copy.deepcopy(value) for name, value in flag.fields.items() if name in WRITABLE_FLAG_FIELDS}
    out["variable_definitions"] = {
        key: {f: v for f, v in var.items() if f in _VARIABLE_FIELDS}
        for key, var in flag.fields.get("variable_definitions", {}).items()
    }
    return out


def _validate_flag(key: str, new: dict[str, Any]) -> None:
    def bad(field: str, why: str) -> ApiError:
        return ApiError(400, "Bad Request", f"{key}.{field}: {why}")

    name = new.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise bad("name", "must be a non-empty string of at most 255 characters")
    if not isinstance(new.get("description", ""), str):
        raise bad("description", "must be a string")
    for field in ("outlier_filtering_enabled", "archived"):
        if field in new and not isinstance(new[field], bool):
            raise bad(field, "must be true or false")
    if "owner_user_id" in new and not isinstance(new["owner_user_id"], str):
        raise bad("owner_user_id", "must be a string")
    if "team_ids" in new and not (
        isinstance(new["team_ids"], list) and all(isinstance(t, str) for t in new["team_ids"])
    ):
        raise bad("team_ids", "must be a list of strings")
    if "custom_fields" in new and not isinstance(new["custom_fields"], dict):
        raise bad("custom_fields", "must be an object")
    variables = new.get("variable_definitions", {})
    if not isinstance(variables, dict):
        raise bad("variable_definitions", "must be an object keyed by variable key")
    for var_key, var in variables.items():
        where = f"variable_definitions.{var_key}"
        if not isinstance(var, dict):
            raise bad(where, "must be an object with key, type and default_value")
        var.setdefault("key", var_key)
        if var["key"] != var_key:
            raise bad(f"{where}.key", f"must equal the map key {var_key!r}")
        if var.get("type") not in VARIABLE_TYPES:
            raise bad(f"{where}.type", f"must be one of {', '.join(VARIABLE_TYPES)}")
        default = var.get("default_value")
        if not isinstance(default, str):
            raise bad(f"{where}.default_value", "must be a string (every default_value is sent as a string)")
        if not _fits_type(var["type"], default):
            raise bad(f"{where}.default_value", f"{default!r} is not a valid {var['type']}")
        if not isinstance(var.get("description", ""), str):
            raise bad(f"{where}.description", "must be a string")


def _fits_type(var_type: str, value: str) -> bool:
    try:
        if var_type == "boolean":
            return value in ("true", "false")
        if var_type == "integer":
            int(value)
        elif var_type == "double":
            float(value)
        elif var_type == "json":
            json.loads(value)
    except ValueError:
        return False
    return True


def _commit_flag(project: ProjectRecord, flag: FlagRecord, new: dict[str, Any], now: str, step: int) -> None:
    old_vars = flag.fields.get("variable_definitions", {})
    merged_vars: dict[str, Any] = {}
    for var_key, var in new.pop("variable_definitions", {}).items():
        previous = old_vars.get(var_key)
        entry = {**var, "description": var.get("description", "")}
        unchanged = previous is not None and all(previous.get(f) == entry.get(f) for f in _VARIABLE_FIELDS)
        entry["created_time"] = previous["created_time"] if previous else now
        entry["updated_time"] = previous["updated_time"] if unchanged and previous else now
        merged_vars[var_key] = entry
    archived = bool(new.get("archived", flag.fields.get("archived")))
    if archived != bool(flag.fields.get("archived")):
        _archive(flag, archived, now)
    for name in WRITABLE_FLAG_FIELDS - {"variable_definitions"}:
        if name in new:
            flag.fields[name] = new[name]
        else:
            flag.fields.pop(name, None)
    flag.fields["variable_definitions"] = merged_vars
    flag.fields["revision"] += step
    flag.fields["updated_time"] = now


def _archive(flag: FlagRecord, archived: bool, now: str) -> None:
    """Archiving stops delivery: running environments are paused and disabled. Unarchiving leaves them off."""
    flag.fields["archived"] = archived
    if archived:
        for ruleset in flag.rulesets.values():
            if ruleset.enabled or ruleset.status == "running":
                ruleset.enabled = False
                ruleset.status = "paused"
                ruleset.revision += 1
                ruleset.updated_time = now


def _start_rule(project: ProjectRecord, rule: dict[str, Any]) -> None:
    rule["status"] = "running"
    if rule.get("days_running") is None:
        rule["days_running"] = 0
    if rule.get("layer_experiment_id") and not rule.get("fetch_results_ui_url"):
        rule["fetch_results_ui_url"] = (
            f"https://app.optimizely.com/v2/projects/{project.id}/results/{rule.get('layer_id')}"
            f"/experiments/{rule['layer_experiment_id']}"
        )


def _validate_ruleset(patched: dict[str, Any]) -> None:
    rules = patched.get("rules")
    if not isinstance(rules, dict):
        raise ApiError(400, "Bad Request", "rules must be an object keyed by rule key")
    if len(rules) > MAX_RULES_PER_RULESET:
        raise ApiError(400, "Bad Request", f"A ruleset holds at most {MAX_RULES_PER_RULESET} rules.")
    for key, rule in rules.items():
        if not isinstance(rule, dict):
            raise ApiError(400, "Bad Request", f"rules.{key} must be an object")
        rule.setdefault("key", key)
        if rule["key"] != key:
            raise ApiError(400, "Bad Request", f"rules.{key}.key must equal the map key")
        if not isinstance(rule.get("name"), str) or not rule["name"]:
            raise ApiError(400, "Bad Request", f"rules.{key}.name is required")
        if rule.get("type") not in RULE_TYPES:
            raise ApiError(400, "Bad Request", f"rules.{key}.type must be one of {', '.join(RULE_TYPES)}")
        share = rule.get("percentage_included", 0)
        if not isinstance(share, int) or isinstance(share, bool) or not 0 <= share <= 10000:
            raise ApiError(400, "Bad Request", f"rules.{key}.percentage_included must be 0..10000 basis points")
        if "enabled" in rule and not isinstance(rule["enabled"], bool):
            raise ApiError(400, "Bad Request", f"rules.{key}.enabled must be true or false")
        if not isinstance(rule.get("variations", {}), dict):
            raise ApiError(400, "Bad Request", f"rules.{key}.variations must be an object keyed by variation key")
    priorities = patched.get("rule_priorities")
    if not isinstance(priorities, list) or sorted(map(str, priorities)) != sorted(rules):
        raise ApiError(400, "Bad Request", "rule_priorities must list every rule key exactly once")
    if not isinstance(patched.get("default_variation_key"), str):
        raise ApiError(400, "Bad Request", "default_variation_key must be a string")
