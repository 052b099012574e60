"""Write tools: patch_flag, archive_flags, unarchive_flags, set_flag_enabled. Each goes through the guard: a
preview against the live resource, the user's confirmation, a revision check just before the write, and a check of
the answer after it.

Each kind of write is a plan (PatchPlan, BulkPlan, TogglePlan: what will be sent), a preview resolver that computes
it as a ``Preview[...Plan]``, and a writer that sends it and checks the answer. A new kind of write adds those three,
its asker (``_asker`` of its preview resolver) and a tool function that hands them to the guard.
"""

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, assert_never

import anyio
import anyio.lowlevel
import jsonpatch
import jsonpointer
from mcp.server.mcpserver import Context, Elicit, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from opt_mcp import lookup, render
from opt_mcp.api.errors import OptimizelyError
from opt_mcp.api.models import Flag, Ruleset
from opt_mcp.budget import respond
from opt_mcp.guard import AlreadyInPlace, Answer, Confirm, Decision, Preview, PreviewStatus, ask
from opt_mcp.progress import advance
from opt_mcp.runtime import ApiToolError, Runtime, api_errors, runtime
from opt_mcp.tools.args import EXPERIMENT_TYPES, EnvironmentKey, FlagKey, ProjectId
from opt_mcp.views import AnyJson, Change, WriteResult

# Flag properties a patch may change: the spec's non-readOnly Flag properties, less those in _NOT_WRITABLE (`key`
# is fixed after creation, `archived` goes through archive_flags, ids do not move). A test compares with the spec.
WRITABLE_FIELDS = frozenset(
    {
        "name",
        "description",
        "outlier_filtering_enabled",
        "variable_definitions",
        "custom_fields",
        "owner_user_id",
        "team_ids",
    }
)
VARIABLE_FIELDS = frozenset({"key", "type", "default_value", "description"})
CONTAINERS = frozenset({"variable_definitions", "custom_fields", "team_ids"})
VARIABLE_TYPES = ("boolean", "string", "double", "integer", "json")
_NOT_WRITABLE = {
    "key": "a flag's key cannot change after it is created",
    "archived": "use archive_flags or unarchive_flags, which preview what stops",
    "environments": "use set_flag_enabled to turn the flag on or off in an environment",
    # Not marked readOnly in the spec, but a flag does not move between projects or accounts.
    "project_id": "a flag cannot move to another project",
    "account_id": "a flag cannot move to another account",
}
ARCHIVE_CHUNK = 50

ConfirmationToken = Annotated[
    str | None,
    Field(
        max_length=300,
        description="token of the preview the user approved",
    ),
]


class PatchOperation(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    op: Literal["add", "remove", "replace", "move", "copy", "test"]
    path: str = Field(max_length=300)
    value: AnyJson = None
    from_: str | None = Field(default=None, alias="from", max_length=300)

    def wire(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {"op": self.op, "path": self.path}
        if self.op in ("add", "replace", "test"):
            out["value"] = self.value
        if self.from_ is not None:
            out["from"] = self.from_
        return out


# ------------------------------------------------------------------------------------------------------------------
# Shared
# ------------------------------------------------------------------------------------------------------------------


def _show(preview: Preview[object], status: PreviewStatus, token: str | None, expires: float | None) -> CallToolResult:
    """A result that writes nothing: the preview, and what to do next."""
    view = WriteResult(
        status=status,
        tool=preview.tool,
        summary=preview.summary,
        changes=preview.changes,
        effects=preview.effects,
        warnings=preview.warnings,
        revisions=preview.revisions,
        confirmation_token=token,
        expires_at=datetime.fromtimestamp(expires, UTC) if expires else None,
        next_step=_next_step(status, token),
    )
    return respond(view, render.write_result(view))


def _next_step(status: PreviewStatus, token: str | None) -> str:
    match status:
        case "preview":
            return (
                "Show this preview to the user. Only if they approve, call the same tool again with the same "
                "arguments plus confirmation_token."
            )
        case "declined":
            return "Nothing was written: the user declined. Do not retry unless they ask again."
        case "changed":
            again = " If they approve, call again with the new confirmation_token." if token else ""
            return (
                "Nothing was written. Show the fresh preview to the user; the earlier confirmation no longer applies."
                + again
            )
        case _:
            assert_never(status)


def _done(view: WriteResult) -> CallToolResult:
    return respond(view, render.write_result(view))


def _written(
    preview: Preview[Any],
    warnings: list[str],
    revisions: dict[str, int | None],
    next_step: str,
    results: dict[str, str] | None = None,  # bulk writes: each key's outcome
) -> CallToolResult:
    """The result of a write that went out: what its preview showed, what the answer warned of, the revisions now."""
    view = WriteResult(
        status="written",
        tool=preview.tool,
        summary=preview.summary,
        changes=preview.changes,
        effects=preview.effects,
        warnings=warnings,
        revisions=revisions,
        results=results or {},
        next_step=next_step,
    )
    return _done(view)


Asker = Callable[[Context[Any, Any], Preview[object], str | None], Awaitable[Elicit[Confirm] | Decision]]


def _asker(previewer: Callable[..., Awaitable[Preview[object]]], name: str) -> Asker:
    """The resolver that asks the user about the preview ``previewer`` resolves: one body for every write tool,
    since what is asked is the preview's own message.

    The SDK learns a resolver's inputs from its signature and annotations, read at registration: ``ctx`` by its
    type, ``preview`` by its ``Resolve`` (the very function of the tool's own ``preview`` parameter, so the SDK runs
    it once per call) and ``confirmation_token`` by the tool argument of that name. This module keeps annotations
    evaluated (no ``from __future__ import annotations``): the ``Resolve(previewer)`` below is the object itself,
    not a string naming a local the SDK could not find.
    """

    async def resolve(
        ctx: Context[Any, Any],
        preview: Annotated[Preview[object], Resolve(previewer)],
        confirmation_token: str | None,
    ) -> Elicit[Confirm] | Decision:
        return ask(ctx, preview, runtime(ctx).guard.mode, confirmation_token)

    # The SDK keys a question on the wire (and names it in errors) by its resolver's module and qualified name: each
    # tool's asker keeps a name of its own rather than sharing "_asker.<locals>.resolve".
    resolve.__name__ = resolve.__qualname__ = name
    return resolve


# ------------------------------------------------------------------------------------------------------------------
# patch_flag
# ------------------------------------------------------------------------------------------------------------------


def _relative(op_path: str, flag_key: str, what: str) -> list[str]:
    try:
        parts = [str(p) for p in jsonpointer.JsonPointer(op_path).parts]
    except jsonpointer.JsonPointerException as exc:
        raise ToolError(f"{what}: {op_path!r} is not a JSON Pointer ({exc}); write paths like /description") from None
    if parts[:1] == [flag_key] and len(parts) > 1:
        parts = parts[1:]
    if not parts:
        raise ToolError(f"{what}: the path is empty; name a field, e.g. /description")
    field = parts[0]
    if field not in WRITABLE_FIELDS:
        why = _NOT_WRITABLE.get(field, "it is read-only, unknown, or another flag's key (one flag per call)")
        raise ToolError(
            f"{what}: {op_path!r} cannot be patched: {field!r} — {why}. "
            f"Writable: {', '.join(sorted(WRITABLE_FIELDS))}. "
            "(Optimizely would silently ignore it, so opt-mcp refuses it.)"
        )
    if field == "variable_definitions" and (len(parts) > 3 or (len(parts) == 3 and parts[2] not in VARIABLE_FIELDS)):
        raise ToolError(
            f"{what}: {op_path!r}: a variable's writable fields are {', '.join(sorted(VARIABLE_FIELDS))}, "
            "e.g. /variable_definitions/<key>/default_value"
        )
    if field not in CONTAINERS and len(parts) > 1:
        raise ToolError(f"{what}: {op_path!r}: {field} is a single value; patch /{field}")
    return parts


def _writable(flag: Flag) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": flag.name,
        "description": flag.description or "",
        "outlier_filtering_enabled": bool(flag.outlier_filtering_enabled),
        "variable_definitions": {
            key: {"key": v.key, "type": v.type, "default_value": v.default_value, "description": v.description or ""}
            for key, v in flag.variable_definitions.items()
        },
    }
    for name in ("custom_fields", "owner_user_id", "team_ids"):
        value = getattr(flag, name)
        if value is not None:
            doc[name] = copy.deepcopy(value)
    return doc


def _check_values(doc: dict[str, Any]) -> None:
    if not isinstance(doc.get("name"), str) or not doc["name"].strip() or len(doc["name"]) > 255:
        raise ToolError("operations: name must be a non-empty string of at most 255 characters")
    if not isinstance(doc.get("description"), str):
        raise ToolError("operations: description must be a string")
    if not isinstance(doc.get("outlier_filtering_enabled"), bool):
        raise ToolError("operations: outlier_filtering_enabled must be true or false")
    teams = doc.get("team_ids", [])
    if not isinstance(teams, list) or not all(isinstance(t, str) for t in teams):
        raise ToolError("operations: team_ids must be a list of team id strings")
    if not isinstance(doc.get("owner_user_id", ""), str):
        raise ToolError("operations: owner_user_id must be a string")
    if not isinstance(doc.get("custom_fields", {}), dict):
        raise ToolError("operations: custom_fields must be an object")
    variables = doc.get("variable_definitions")
    if not isinstance(variables, dict):
        raise ToolError("operations: variable_definitions must be an object keyed by variable key")
    for key, var in variables.items():
        where = f"operations: variable_definitions/{key}"
        if not isinstance(var, dict) or var.get("type") not in VARIABLE_TYPES:
            raise ToolError(f"{where}: needs a type, one of {', '.join(VARIABLE_TYPES)}")
        if var.get("key", key) != key:
            raise ToolError(f"{where}/key must equal {key!r}")
        if not isinstance(var.get("default_value"), str):
            raise ToolError(f"{where}/default_value must be a string (Optimizely stores every default as text)")


def _leaves(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict) and doc:
        out: dict[str, Any] = {}
        for key, value in doc.items():
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            out.update(_leaves(value, f"{prefix}/{escaped}"))
        return out
    return {prefix: doc}


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Field by field, what changes (leaves; lists compared whole)."""
    old, new = _leaves(before), _leaves(after)
    return [
        Change(path=path, before=old.get(path), after=new.get(path))
        for path in sorted(set(old) | set(new))
        if old.get(path) != new.get(path)
    ]


@dataclass(frozen=True)
class PatchPlan:
    """A JSON Patch of one flag, as Optimizely takes it, and what the flag's writable fields are after it."""

    project_id: int
    flag_key: str
    api_operations: list[dict[str, JsonValue]]  # paths start with /<flag_key>, as patch_flags sends them
    expected: dict[str, JsonValue]  # _writable(flag) once the patch is applied


def _relative_operations(
    flag_key: str, operations: list[PatchOperation]
) -> tuple[list[dict[str, JsonValue]], list[str]]:
    """The operations with paths relative to the flag, checked; and a warning for each whole container replaced."""
    relative: list[dict[str, JsonValue]] = []
    warnings: list[str] = []
    for index, operation in enumerate(operations):
        wire = operation.wire()
        parts = _relative(operation.path, flag_key, f"operations[{index}].path")
        wire["path"] = jsonpointer.JsonPointer.from_parts(parts).path
        if operation.from_ is not None:
            wire["from"] = jsonpointer.JsonPointer.from_parts(
                _relative(operation.from_, flag_key, f"operations[{index}].from")
            ).path
        if operation.op == "replace" and (
            (len(parts) == 1 and parts[0] in CONTAINERS) or (parts[0] == "variable_definitions" and len(parts) == 2)
        ):
            warnings.append(
                f"{wire['path']} is replaced as a whole: anything in it that the value leaves out is removed"
            )
        relative.append(wire)
    return relative, warnings


def _applied(before: dict[str, Any], relative: list[dict[str, JsonValue]]) -> dict[str, Any]:
    """The flag's writable fields after the patch, as Optimizely will hold them."""
    try:
        after: dict[str, Any] = jsonpatch.apply_patch(before, relative, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise ToolError(f"operations: a test operation failed against the current flag: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise ToolError(f"operations: cannot be applied to the current flag: {exc}") from None
    _check_values(after)
    for key, variable in after["variable_definitions"].items():
        # What Optimizely fills in for a new variable, so the preview and the after-write check expect it too.
        variable.setdefault("key", key)
        variable.setdefault("description", "")
    return after


async def _patch_preview(
    ctx: Context[Any, Any], flag_key: str, operations: list[PatchOperation], project_id: int | None
) -> Preview[PatchPlan]:
    rt = runtime(ctx)
    pid = rt.project(project_id)
    relative, warnings = _relative_operations(flag_key, operations)
    with api_errors():
        flag = await lookup.flag(rt.client, pid, flag_key)
    if flag.archived:
        raise ToolError(f"flag_key: {flag_key!r} is archived; unarchive_flags it before patching it")
    before = _writable(flag)
    after = _applied(before, relative)
    changes = diff(before, after)
    if not changes:
        raise AlreadyInPlace("operations: they change nothing on the current flag; get_flag shows its values")
    api_operations = [
        {**op, "path": f"/{flag_key}{op['path']}", **({"from": f"/{flag_key}{op['from']}"} if "from" in op else {})}
        for op in relative
    ]
    return Preview(
        tool="patch_flag",
        arguments={"flag_key": flag_key, "project_id": pid, "operations": [op.wire() for op in operations]},
        revisions={flag_key: flag.revision},
        summary=f"patch flag {flag_key!r} in project {pid}: {len(changes)} field(s) change",
        changes=changes,
        warnings=warnings,
        plan=PatchPlan(project_id=pid, flag_key=flag_key, api_operations=api_operations, expected=after),
    )


def _patch_surprises(preview: Preview[PatchPlan], flag: Flag) -> list[str]:
    """What Optimizely's answer shows that the preview did not expect."""
    plan = preview.plan
    warnings = []
    if _writable(flag) != plan.expected:
        off = [f"{c.path} is {c.after!r}, not {c.before!r}" for c in diff(plan.expected, _writable(flag))]
        warnings.append(f"after the write the flag differs from what was asked: {'; '.join(off)}")
    before = preview.revisions[plan.flag_key]
    # Whether Optimizely counts a revision per request or per operation is not documented: either is ours.
    sent = len(plan.api_operations)
    if before is not None and flag.revision is not None and not before < flag.revision <= before + sent:
        expected = f"{before + 1}" if sent == 1 else f"{before + 1} to {before + sent} for {sent} operations"
        warnings.append(
            f"revision went from {before} to {flag.revision}, expected {expected}: someone else may have written "
            "too; get_flag shows the flag as it is now"
        )
    return warnings


async def _write_patch(rt: Runtime, preview: Preview[PatchPlan], written: dict[str, int | None]) -> CallToolResult:
    plan = preview.plan
    with api_errors(), anyio.CancelScope(shield=True):  # a request sent is seen through: its outcome is known
        changed = await rt.client.patch_flags(plan.project_id, plan.api_operations)
    flag = changed.get(plan.flag_key)
    if flag is None:
        raise ToolError(f"Optimizely accepted the patch but did not return {plan.flag_key!r}; get_flag to check it")
    written[plan.flag_key] = flag.revision
    warnings = [*preview.warnings, *_patch_surprises(preview, flag)]
    return _written(preview, warnings, {plan.flag_key: flag.revision}, "Done. get_flag shows the flag as it is now.")


_patch_ask = _asker(_patch_preview, "_patch_ask")


async def patch_flag(
    ctx: Context[Any, Any],
    flag_key: Annotated[FlagKey, Field(description="the flag's key")],
    operations: Annotated[
        list[PatchOperation],
        Field(
            min_length=1,
            max_length=50,
            description="RFC 6902 operations; paths relative to the flag",
        ),
    ],
    preview: Annotated[Preview[PatchPlan], Resolve(_patch_preview)],
    answer: Annotated[Answer, Resolve(_patch_ask)],
    project_id: ProjectId = None,
    confirmation_token: ConfirmationToken = None,
) -> Annotated[CallToolResult, WriteResult]:
    """Change a flag with JSON Patch: /name, /description, /outlier_filtering_enabled,
    /variable_definitions/<key>/default_value, /custom_fields, /owner_user_id, /team_ids.
    The user approves a preview first (in the client, or you call again with its confirmation_token)."""
    rt = runtime(ctx)
    return await rt.guard.run(
        preview,
        answer,
        confirmation_token,
        fresh_preview=lambda: _patch_preview(ctx, flag_key, operations, project_id),
        write=lambda written: _write_patch(rt, preview, written),
        show=_show,
    )


# ------------------------------------------------------------------------------------------------------------------
# archive_flags, unarchive_flags
# ------------------------------------------------------------------------------------------------------------------

FlagKeys = Annotated[list[FlagKey], Field(min_length=1, max_length=500, description="flag keys")]


async def _flags_by_key(
    ctx: Context[Any, Any], rt: Runtime, pid: int, keys: list[str], *, archived_first: bool
) -> dict[str, Flag]:
    looked_up = 0

    async def progress(count: int) -> None:
        nonlocal looked_up
        looked_up += count
        await advance(ctx, count, f"looked up {looked_up} of {len(keys)} flags")

    with api_errors():
        return await rt.client.find_flags(
            pid, keys, archived_first=archived_first, chunk=ARCHIVE_CHUNK, on_chunk=progress
        )


def _archive_effects(flag: Flag) -> list[str]:
    effects = []
    for env in sorted(flag.environments.values(), key=lambda e: e.priority):
        if env.enabled or env.status == "running":
            effects.append(
                f"{flag.key}: {env.key} is {'ON' if env.enabled else 'off'} ({env.status}): "
                "it stops serving and is paused"
            )
        for rule in env.rules_detail:
            if rule.type in EXPERIMENT_TYPES and rule.status == "running":
                days = f", {rule.days_running} days running" if rule.days_running is not None else ""
                effects.append(
                    f"{flag.key}: {rule.type} rule {rule.key!r} in {env.key} is running{days}: "
                    "it stops collecting results"
                )
    return effects


@dataclass(frozen=True)
class BulkPlan:
    """Archive (or unarchive) the flags that are not in that state yet, chunk by chunk."""

    project_id: int
    archive: bool
    todo: list[str]  # the keys whose state changes, in the order asked; the others are left as they are

    @property
    def verb(self) -> str:
        """The state the flags are put in, as effects, results and progress name it."""
        return "archived" if self.archive else "unarchived"


async def _bulk_preview(
    ctx: Context[Any, Any], flag_keys: list[str], project_id: int | None, archive: bool
) -> Preview[BulkPlan]:
    rt = runtime(ctx)
    pid = rt.project(project_id)
    keys = list(dict.fromkeys(flag_keys))
    # Archiving acts on unarchived flags and unarchiving on archived ones: ask for those first.
    found = await _flags_by_key(ctx, rt, pid, keys, archived_first=not archive)
    unknown = [k for k in keys if k not in found]
    if unknown:
        raise ToolError(f"flag_keys: not found in project {pid}, nothing was written: {', '.join(unknown)}")
    plan = BulkPlan(project_id=pid, archive=archive, todo=[k for k in keys if found[k].archived != archive])
    effects = [f"{k}: already {plan.verb}, left as it is" for k in keys if k not in plan.todo]
    if archive:
        for key in plan.todo:
            effects += _archive_effects(found[key])
    else:
        effects += [f"{k}: comes back with every environment off; turn it on with set_flag_enabled" for k in plan.todo]
    summary = f"{'archive' if archive else 'unarchive'} {len(plan.todo)} flag(s) in project {pid}"
    if archive:
        summary += ": archiving stops delivery in every environment (unarchive_flags restores the flag, not its state)"
    return Preview(
        tool="archive_flags" if archive else "unarchive_flags",
        arguments={"flag_keys": list(flag_keys), "project_id": pid},  # a list[JsonValue]: lists are invariant
        revisions={k: found[k].revision for k in keys},
        summary=summary,
        effects=effects,
        plan=plan,
    )


async def _recheck_chunk(rt: Runtime, pid: int, keys: list[str], archive: bool) -> dict[str, Flag]:
    try:
        # After the write, the flags that took the change are in the state asked for: look there first.
        return await rt.client.find_flags(pid, keys, archived_first=archive, chunk=ARCHIVE_CHUNK)
    except OptimizelyError:
        return {}


def _chunk_written(
    preview: Preview[BulkPlan], chunk: list[str], answer: dict[str, Flag], after: dict[str, int | None]
) -> dict[str, str]:
    """Each key's result from Optimizely's answer to its chunk."""
    plan = preview.plan
    results: dict[str, str] = {}
    for key in chunk:
        flag = answer.get(key)
        if flag is None:
            results[key] = "not in Optimizely's answer: get_flag to check it"
            continue
        after[key] = flag.revision
        before = preview.revisions.get(key)
        ok = flag.archived == plan.archive and (before is None or flag.revision == before + 1)
        results[key] = plan.verb if ok else f"answer differs: archived={flag.archived}, revision {flag.revision}"
    return results


async def _chunk_failed(
    rt: Runtime, plan: BulkPlan, chunk: list[str], exc: OptimizelyError, after: dict[str, int | None]
) -> dict[str, str]:
    """Each key's result after its chunk's request failed: a failure can come after the change was made, so each
    result says what a fresh read shows."""
    now = await _recheck_chunk(rt, plan.project_id, chunk, plan.archive)
    results: dict[str, str] = {}
    for key in chunk:
        flag = now.get(key)
        if flag is not None and flag.archived == plan.archive:
            after[key] = flag.revision
            results[key] = f"{plan.verb} (a fresh read shows it, though the request failed: {exc})"
        elif flag is not None:
            results[key] = f"failed, not {plan.verb} (a fresh read shows it unchanged): {exc}"
        else:
            results[key] = f"failed, and a fresh read was not possible: get_flag to check it. {exc}"
    return results


async def _write_bulk(
    ctx: Context[Any, Any], rt: Runtime, preview: Preview[BulkPlan], after: dict[str, int | None]
) -> CallToolResult:
    """Chunk by chunk, reporting progress after each. A cancellation stops it between chunks, never inside one:
    each request sent is seen through and recorded in ``after``, which the guard audits either way."""
    plan = preview.plan
    results = {k: "unchanged (already in that state)" for k in preview.revisions if k not in plan.todo}
    warnings: list[str] = []
    send = rt.client.archive_flags if plan.archive else rt.client.unarchive_flags
    for start in range(0, len(plan.todo), ARCHIVE_CHUNK):
        chunk = plan.todo[start : start + ARCHIVE_CHUNK]
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            with anyio.CancelScope(shield=True):
                answer = await send(plan.project_id, chunk)
        except OptimizelyError as exc:
            results |= await _chunk_failed(rt, plan, chunk, exc, after)
            if not any(key in after for key in plan.todo):
                # Nothing was written: a failed write, not a result that reads "written" (the guard audits it so).
                raise _nothing_written(plan, chunk, results, exc) from None
            results |= dict.fromkeys(plan.todo[start + ARCHIVE_CHUNK :], "not attempted (an earlier chunk failed)")
            warnings.append("the write stopped part-way: see results per key")
            break
        results |= _chunk_written(preview, chunk, answer, after)
        await advance(ctx, len(chunk), f"{plan.verb} {start + len(chunk)} of {len(plan.todo)} flags")
    done = "Done. list_flags with archived=true shows archived flags." if plan.archive else "Done."
    stopped = "Stopped part-way: results says what was written; nothing more was sent."
    return _written(preview, warnings, after, stopped if warnings else done, results)


def _nothing_written(plan: BulkPlan, chunk: list[str], results: dict[str, str], exc: OptimizelyError) -> ToolError:
    unread = [key for key in chunk if "fresh read was not possible" in results[key]]
    state = (
        f"a fresh read was not possible for {', '.join(unread[:5])}{' …' if len(unread) > 5 else ''}: get_flag "
        "to check before trying again"
        if unread
        else "a fresh read shows every flag unchanged"
    )
    message = f"Optimizely refused or failed the request; no flag is known to be {plan.verb} ({state}). {exc}"
    return ApiToolError(message, status=exc.status, uuid=exc.uuid)


async def _bulk_run(
    ctx: Context[Any, Any],
    flag_keys: list[str],
    project_id: int | None,
    preview: Preview[BulkPlan],
    answer: Answer,
    token: str | None,
) -> CallToolResult:
    rt = runtime(ctx)
    archive = preview.plan.archive
    return await rt.guard.run(
        preview,
        answer,
        token,
        fresh_preview=lambda: _bulk_preview(ctx, flag_keys, project_id, archive=archive),
        write=lambda written: _write_bulk(ctx, rt, preview, written),
        show=_show,
    )


async def _archive_preview(ctx: Context[Any, Any], flag_keys: list[str], project_id: int | None) -> Preview[BulkPlan]:
    return await _bulk_preview(ctx, flag_keys, project_id, archive=True)


_archive_ask = _asker(_archive_preview, "_archive_ask")


async def archive_flags(
    ctx: Context[Any, Any],
    flag_keys: FlagKeys,
    preview: Annotated[Preview[BulkPlan], Resolve(_archive_preview)],
    answer: Annotated[Answer, Resolve(_archive_ask)],
    project_id: ProjectId = None,
    confirmation_token: ConfirmationToken = None,
) -> Annotated[CallToolResult, WriteResult]:
    """Archive flags: they stop serving in every environment. The user approves a preview of what stops first.
    unarchive_flags restores them, with environments off."""
    return await _bulk_run(ctx, flag_keys, project_id, preview, answer, confirmation_token)


async def _unarchive_preview(ctx: Context[Any, Any], flag_keys: list[str], project_id: int | None) -> Preview[BulkPlan]:
    return await _bulk_preview(ctx, flag_keys, project_id, archive=False)


_unarchive_ask = _asker(_unarchive_preview, "_unarchive_ask")


async def unarchive_flags(
    ctx: Context[Any, Any],
    flag_keys: FlagKeys,
    preview: Annotated[Preview[BulkPlan], Resolve(_unarchive_preview)],
    answer: Annotated[Answer, Resolve(_unarchive_ask)],
    project_id: ProjectId = None,
    confirmation_token: ConfirmationToken = None,
) -> Annotated[CallToolResult, WriteResult]:
    """Restore archived flags. They come back with every environment off. The user must approve a preview first."""
    return await _bulk_run(ctx, flag_keys, project_id, preview, answer, confirmation_token)


# ------------------------------------------------------------------------------------------------------------------
# set_flag_enabled
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TogglePlan:
    """Turn a flag on or off in one environment (its ruleset there), unless it already is."""

    project_id: int
    flag_key: str
    environment: str
    enabled: bool
    unchanged: bool  # already in that state: there is nothing to confirm or write

    @property
    def scope(self) -> str:
        """The ruleset's key in the revisions."""
        return f"{self.flag_key}/{self.environment}"


def _toggle_effects(ruleset: Ruleset, enabled: bool) -> list[str]:
    """Which of the environment's rules start or stop serving."""
    effects: list[str] = []
    for key in ruleset.rule_priorities:
        rule = ruleset.rules.get(key)
        if rule is None:
            continue
        share = f"{(rule.percentage_included or 0) / 100:g}%"
        if enabled and rule.enabled:
            effects.append(f"starts serving: {rule.type} rule {key!r} ({share} of its audience)")
        elif enabled:
            effects.append(f"stays off: {rule.type} rule {key!r} is disabled")
        elif ruleset.enabled and rule.enabled:
            effects.append(f"stops serving: {rule.type} rule {key!r} ({share} of its audience)")
    if not effects:
        effects.append("no rules: everyone gets the default variation" + (" (on)" if enabled else ""))
    return effects


async def _toggle_preview(
    ctx: Context[Any, Any], flag_key: str, environment: str, enabled: bool, project_id: int | None
) -> Preview[TogglePlan]:
    rt = runtime(ctx)
    pid = rt.project(project_id)
    with api_errors():
        flag = await lookup.flag(rt.client, pid, flag_key)
        env = lookup.environment_of(flag, environment)
    if flag.archived:
        raise ToolError(f"flag_key: {flag_key!r} is archived; unarchive_flags it first")
    with api_errors():
        ruleset = await rt.client.get_ruleset(pid, flag_key, environment)
    production = env.priority == 1
    plan = TogglePlan(
        project_id=pid,
        flag_key=flag_key,
        environment=environment,
        enabled=enabled,
        unchanged=ruleset.enabled == enabled,
    )
    where = f"{environment}{' (PRODUCTION)' if production else ''}"
    return Preview(
        tool="set_flag_enabled",
        arguments={"flag_key": flag_key, "environment": environment, "enabled": enabled, "project_id": pid},
        revisions={plan.scope: ruleset.revision},
        summary=f"turn flag {flag_key!r} {'ON' if enabled else 'OFF'} in {where}, project {pid}",
        effects=_toggle_effects(ruleset, enabled),
        # A toggle already in place asks nothing (the tool says so); production-only mode asks only in production.
        skip_confirmation=plan.unchanged or (rt.guard.mode == "production-only" and not production),
        plan=plan,
    )


async def _write_toggle(rt: Runtime, preview: Preview[TogglePlan], written: dict[str, int | None]) -> CallToolResult:
    plan = preview.plan
    toggle = rt.client.enable_ruleset if plan.enabled else rt.client.disable_ruleset
    with api_errors(), anyio.CancelScope(shield=True):  # a request sent is seen through: its outcome is known
        ruleset = await toggle(plan.project_id, plan.flag_key, plan.environment)
    written[plan.scope] = ruleset.revision
    warnings = []
    if ruleset.enabled != plan.enabled:
        warnings.append(f"after the write the flag is {'on' if ruleset.enabled else 'off'} in {plan.environment}")
    before = preview.revisions[plan.scope]
    if before is not None and ruleset.revision != before + 1:
        warnings.append(f"revision went from {before} to {ruleset.revision}, not {before + 1}")
    return _written(preview, warnings, {plan.scope: ruleset.revision}, "Done. get_flag shows the flag as it is now.")


_toggle_ask = _asker(_toggle_preview, "_toggle_ask")


async def set_flag_enabled(
    ctx: Context[Any, Any],
    flag_key: Annotated[FlagKey, Field(description="the flag's key")],
    environment: Annotated[EnvironmentKey, Field(description="environment key, e.g. production")],
    enabled: Annotated[bool, Field(description="true turns the flag on, false off")],
    preview: Annotated[Preview[TogglePlan], Resolve(_toggle_preview)],
    answer: Annotated[Answer, Resolve(_toggle_ask)],
    project_id: ProjectId = None,
    confirmation_token: ConfirmationToken = None,
) -> Annotated[CallToolResult, WriteResult]:
    """Turn a flag on or off in one environment; its enabled rules start or stop serving. The user approves a
    preview first."""
    rt = runtime(ctx)
    if preview.plan.unchanged:
        view = WriteResult(
            status="unchanged",
            tool=preview.tool,
            summary=f"flag {flag_key!r} is already {'on' if enabled else 'off'} in {environment}",
            revisions=preview.revisions,
            next_step="Nothing was written.",
        )
        return _done(view)
    return await rt.guard.run(
        preview,
        answer,
        confirmation_token,
        fresh_preview=lambda: _toggle_preview(ctx, flag_key, environment, enabled, project_id),
        write=lambda written: _write_toggle(rt, preview, written),
        show=_show,
    )
