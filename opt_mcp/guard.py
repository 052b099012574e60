"""The confirmation protocol: nothing is written that the user did not see and approve.

Every write tool computes a preview against the live resource (what changes, and the revision it saw). Then:
- a client that can elicit asks the user in the client, with the preview as the message. Under the 2026 protocol
  the question is re-asked if the preview changed before the answer came back (the SDK consumes an answer only for
  the exact question it was given); under the handshake protocol the same call carries the preview to the write;
- otherwise the first call returns the preview and a signed, single-use confirmation token bound to the tool, the
  exact arguments and the previewed revisions; the write happens when the same call comes back with the token.
The operator's confirm mode narrows this: under ``token`` nobody is asked in the client; under ``production-only`` a
flag turned on or off is confirmed only in the production environment (priority 1), and every other write as above.
Just before writing, the resource is fetched again: if its revision moved, nothing is written and a fresh preview
is returned. Every write and every refused write leaves an audit record; the audit never holds a secret.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import anyio
from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from opt_mcp.settings import TOKEN_TTL_SECONDS, ConfirmMode
from opt_mcp.shared import Store, StoreDown

if TYPE_CHECKING:
    import sqlite3

    # For the annotations only: the views do not load with the guard.
    from opt_mcp.views import Change

# How long a shielded re-read after a failed write may take before the failure is reported without it.
RECHECK_SECONDS = 30.0
log = logging.getLogger("opt_mcp.guard")
audit_log = logging.getLogger("opt_mcp.audit")


class Confirm(BaseModel):
    """What the user answers in the client."""

    confirm: bool = Field(description="Apply exactly the change shown?")


class Decision(BaseModel):
    """A resolver outcome that is not the user's answer: confirm by token, or no confirmation needed. (A model, not
    a dataclass, so that ``Answer`` can name it: the SDK hands it to the tool as the data of an accepted elicitation,
    whose type parameter is bound to models.)"""

    model_config = ConfigDict(frozen=True)

    kind: Literal["token", "skip"]


Answer = ElicitationResult[Confirm | Decision]
"""What a write tool's ``answer`` receives from its ask resolver: the SDK passes the user's reply to an ``Elicit``
as it came (accepted with a Confirm, declined or cancelled), and a Decision the resolver returned instead as an
accepted elicitation of it."""

PreviewStatus = Literal["preview", "declined", "changed"]
"""The statuses of a result that shows a preview and wrote nothing: the ones the guard asks ``show`` for (each is
a ``WriteStatus`` too)."""

# A preview's plan, what its writer sends. Covariant: code that never reads the plan takes any Preview[object].
P = TypeVar("P", covariant=True)
R = TypeVar("R")  # a write tool's result


@dataclass(frozen=True, kw_only=True)
class Preview(Generic[P]):
    """What a write would do, computed against the live resource: what the user sees (``message``) and confirms,
    and the plan its writer carries out (typed per kind of write, e.g. ``Preview[PatchPlan]``)."""

    tool: str
    arguments: dict[str, JsonValue]  # the call's own arguments, as a confirmation token binds them
    revisions: dict[str, int | None]  # each resource's revision as previewed: the write needs them unchanged
    summary: str
    plan: P
    changes: list[Change] = field(default_factory=list)
    effects: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skip_confirmation: bool = False  # nothing to confirm: the confirm mode does not ask, or it changes nothing

    @property
    def message(self) -> str:
        """The preview as the user sees it in the client. It names the revisions: under the 2026 protocol the SDK
        consumes an answer only for the exact question asked, so a resource that moved before the answer came back
        is asked about again."""
        lines = [f"Confirm {self.tool}: {self.summary}"]
        lines += [f"  {c.path}: {c.before!r} -> {c.after!r}" for c in self.changes]
        lines += [f"  {e}" for e in self.effects]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        lines.append("revisions: " + ", ".join(f"{k} {v}" for k, v in self.revisions.items()))
        return "\n".join(lines)


class Refused(Exception):
    """A confirmation that cannot be used; the message says why and what to do."""


class Stale(Refused):
    """A valid token for these arguments, but the resource has changed since its preview."""


# ------------------------------------------------------------------------------------------------------------------
# Confirmation tokens
# ------------------------------------------------------------------------------------------------------------------


class Ledger(Protocol):
    """Where used confirmation tokens are remembered until they expire."""

    async def use(self, token_id: str, expires_at: float) -> bool:
        """Mark a token used; False if it already was. Raises StoreDown when the record cannot be reached."""
        ...


class StoreLedger:
    """Used tokens in the shared store: this process's, or Redis's for every replica (atomically: of two replicas
    given the same token at the same moment, one wins)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def use(self, token_id: str, expires_at: float) -> bool:
        return await self._store.claim(f"used:{token_id}", max(1.0, expires_at - time.time()))


class FileLedger:
    """The used tokens in an SQLite file, so that the worker processes of one host share them: a token redeemed on
    one worker is used on all of them. (Replicas on several hosts need a shared store of their own.)"""

    def __init__(self, path: str) -> None:
        self._path = path
        with contextlib.closing(self._connect()) as db:
            db.execute("CREATE TABLE IF NOT EXISTS used (id TEXT PRIMARY KEY, expires_at REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        import sqlite3  # only a hosted server with several workers uses this ledger: spared at every start-up

        return sqlite3.connect(self._path, timeout=10.0, isolation_level=None)

    async def use(self, token_id: str, expires_at: float) -> bool:
        with contextlib.closing(self._connect()) as db:
            db.execute("DELETE FROM used WHERE expires_at < ?", (time.time(),))
            inserted = db.execute("INSERT OR IGNORE INTO used VALUES (?, ?)", (token_id, expires_at)).rowcount
        return inserted == 1


def canonical(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class TokenSigner:
    """Issues and redeems confirmation tokens: HMAC-SHA256 over tool, arguments, revisions, expiry and a nonce."""

    def __init__(self, secret: bytes, ledger: Ledger, *, ttl: float = TOKEN_TTL_SECONDS) -> None:
        if len(secret) < 32:
            raise ValueError("the signing secret must be at least 32 bytes")
        self._secret = secret
        self._ledger = ledger
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"TokenSigner(ttl={self.ttl})"

    @staticmethod
    def _digest(value: object) -> str:
        return hashlib.sha256(canonical({"v": value}).encode()).hexdigest()[:24]

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self, tool: str, arguments: Mapping[str, Any], revisions: Mapping[str, int | None]) -> tuple[str, float]:
        expires = time.time() + self.ttl
        scope = self._digest({"tool": tool, "arguments": arguments})
        payload = f"{scope}.{self._digest(revisions)}.{int(expires)}.{secrets.token_urlsafe(9)}"
        return f"{payload}.{self._sign(payload)}", expires

    async def redeem(
        self, token: str, tool: str, arguments: Mapping[str, Any], revisions: Mapping[str, int | None]
    ) -> None:
        """Accept a token once, for exactly this call and state; raise Refused (or Stale) otherwise."""
        try:
            scope, state, expires, nonce, signature = token.split(".")
            expires_at = float(expires)
        except ValueError:
            raise Refused("confirmation_token is malformed: call again without it to get a fresh preview") from None
        if not hmac.compare_digest(self._sign(f"{scope}.{state}.{expires}.{nonce}"), signature):
            raise Refused("confirmation_token is not one this server issued: call again without it for a preview")
        if expires_at < time.time():
            raise Refused("confirmation_token has expired: call again without it to get a fresh preview")
        if not hmac.compare_digest(scope, self._digest({"tool": tool, "arguments": arguments})):
            raise Refused(
                "confirmation_token was issued for other arguments or another tool: a token confirms exactly the "
                "call that was previewed; call again without it to preview this one"
            )
        if not hmac.compare_digest(state, self._digest(revisions)):
            raise Stale("the resource changed since the preview this token confirms")
        if not await self._ledger.use(f"{scope}.{nonce}", expires_at):
            raise Refused("confirmation_token was already used: each token confirms one write")

    async def reachable(self) -> None:
        """Raise StoreDown unless the record of used tokens answers (a write approved another way still needs it:
        with the record unreachable, nothing is written at all)."""
        await self._ledger.use(f"probe.{secrets.token_urlsafe(9)}", time.time() + 1)


def person_secret(secret: bytes, person: str) -> bytes:
    """A signing key of one person's own, derived from the server's secret: a confirmation token issued to one
    person is "not one this server issued" for anyone else, on every replica that shares the secret."""
    return hmac.new(secret, b"opt-mcp person\x00" + person.encode(), hashlib.sha256).digest()


# ------------------------------------------------------------------------------------------------------------------
# Audit
# ------------------------------------------------------------------------------------------------------------------


class AlreadyInPlace(ToolError):
    """A write that would change nothing: what it asks for is already there."""


class Audit:
    """JSON lines, one per write or refused write: to a file (``OPT_MCP_AUDIT_LOG``), else to the log on stderr; and
    to the shared store's audit stream (a Redis stream, when replicas share one)."""

    def __init__(self, path: str | None = None, store: Store | None = None) -> None:
        self._path = path
        self._store = store
        self._lock = threading.Lock()

    async def record(self, **fields: Any) -> None:
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields}
        line = json.dumps(entry, ensure_ascii=False, default=str)
        if not self._path:
            # In the log's own format: a JSON-lines log (OPT_MCP_LOG_FORMAT=json) gets the entry's keys as its own.
            brief = f"audit: {fields.get('tool')} {fields.get('outcome')}"
            audit_log.info("%s", line, extra={"fields": entry, "brief": brief})
        else:
            self._append(self._path, line)
        if self._store is not None:
            try:
                await self._store.append("audit", entry)
            except StoreDown as exc:  # the line above is the record; the stream is a copy for the team
                log.warning("audit entry not added to the shared audit stream: %s", exc)

    def _append(self, path: str, line: str) -> None:
        # A line appended to a local file, under a lock so that lines of concurrent writes never interleave.
        with self._lock, open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


# ------------------------------------------------------------------------------------------------------------------
# The flow every write tool follows
# ------------------------------------------------------------------------------------------------------------------


def can_elicit(ctx: Context[Any, Any]) -> bool:
    """Whether the user can be asked in the client during this call."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    version = ctx.protocol_version or ""
    return version >= "2026-07-28" or ctx.session.can_send_request


def ask(
    ctx: Context[Any, Any], preview: Preview[object], mode: ConfirmMode, token: str | None
) -> Elicit[Confirm] | Decision:
    """Resolver body shared by the write tools: ask the user in the client, or fall back to a token."""
    if preview.skip_confirmation:
        return Decision(kind="skip")
    if token is None and mode != "token" and can_elicit(ctx):
        return Elicit(preview.message, Confirm)
    return Decision(kind="token")


@dataclass
class Guard:
    signer: TokenSigner
    audit: Audit
    mode: ConfirmMode = "elicit"
    person: str | None = None  # who is writing, in hosted mode; stdio has no identity

    async def run(
        self,
        preview: Preview[P],
        answer: Answer,
        token: str | None,
        *,
        fresh_preview: Callable[[], Awaitable[Preview[P]]],
        write: Callable[[dict[str, int | None]], Awaitable[R]],
        show: Callable[[Preview[P], PreviewStatus, str | None, float | None], R],
    ) -> R:
        """Confirm, re-check the revisions, then write; or return why nothing was written.

        ``answer`` is what the tool's ask resolver resolved to (the user's answer, or a Decision). ``show`` renders
        a result that writes nothing: (preview, status, token, expires_at). ``write`` returns its result, and records
        each revision after a write in the dict it is given as soon as Optimizely answers: a write that fails or is
        cancelled part-way is audited with what it did write.
        """
        audit = {"tool": preview.tool, "arguments": preview.arguments, "revision_before": preview.revisions}
        if self.person is not None:
            audit = {"person": self.person, **audit}
        match answer:
            case AcceptedElicitation(data=Decision(kind="token")):
                by_token = True
            case AcceptedElicitation(data=Decision(kind="skip") | Confirm(confirm=True)):
                by_token = False
            case _:  # declined, cancelled, or accepted with "apply" left unticked
                await self._record(audit, outcome="declined")
                return show(preview, "declined", None, None)
        if by_token and token is None:
            issued, expires = self.signer.issue(preview.tool, preview.arguments, preview.revisions)
            return show(preview, "preview", issued, expires)
        try:
            if token is not None and by_token:
                await self.signer.redeem(token, preview.tool, preview.arguments, preview.revisions)
            else:
                await self.signer.reachable()  # approved in the client: still, no write without the record
        except Stale as exc:
            await self._record(audit, outcome="refused", reason=str(exc))
            issued, expires = self.signer.issue(preview.tool, preview.arguments, preview.revisions)
            return show(preview, "changed", issued, expires)
        except Refused as exc:
            await self._record(audit, outcome="refused", reason=str(exc))
            raise ToolError(f"confirmation_token: {exc}. Nothing was written.") from None
        except StoreDown as exc:
            await self._record(audit, outcome="refused", reason=str(exc))
            raise ToolError(
                "the shared record of confirmations cannot be reached, and no write goes out without it: nothing "
                "was written. Try again in a moment (the server reconnects by itself)."
            ) from None
        try:
            current = await fresh_preview()
        except ToolError as exc:  # e.g. archived, or already in place, since the approval: still a refused write
            await self._record(audit, outcome="refused", reason=str(exc))
            raise
        if current.revisions != preview.revisions:
            await self._record(
                audit, outcome="refused", reason="changed since the preview", revision_now=current.revisions
            )
            if by_token:
                issued, expires = self.signer.issue(current.tool, current.arguments, current.revisions)
                return show(current, "changed", issued, expires)
            return show(current, "changed", None, None)
        written: dict[str, int | None] = {}
        try:
            result = await write(written)
        except anyio.get_cancelled_exc_class():
            # The client cancelled: the writers see each request they sent through, so this is what was written.
            await self._record(audit, outcome="cancelled", revision_after=written)
            raise
        except Exception as exc:
            # Seen through even if the client cancels now: a failed write is the one whose record matters most.
            found = "A fresh read after the failure took too long: read the resource before trying again."
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(RECHECK_SECONDS):
                    found = await self._recheck(preview, fresh_preview)
                await self.audit.record(
                    **audit,
                    outcome="failed",
                    status=getattr(exc, "status", None),
                    uuid=getattr(exc, "uuid", None),
                    revision_after=written,
                    recheck=found,
                )
            if isinstance(exc, ToolError):
                raise ToolError(f"{exc} {found}") from None
            raise
        await self._record(audit, outcome="written", revision_after=written)
        return result

    async def _record(self, audit: dict[str, Any], **fields: Any) -> None:
        # Shielded: a cancellation arriving now must not cost the record of what happened.
        with anyio.CancelScope(shield=True):
            await self.audit.record(**audit, **fields)

    @staticmethod
    async def _recheck(preview: Preview[P], fresh_preview: Callable[[], Awaitable[Preview[P]]]) -> str:
        """After a failed write, what Optimizely holds now: a failure can come after the change was made (a lost
        answer, a gateway error), and the user must not be told "failed" about a change that happened."""
        try:
            now = await fresh_preview()
        except AlreadyInPlace:
            return (
                "A fresh read after the failure shows the requested values in place: the write was most likely "
                "applied. Read it (get_flag) before doing anything again."
            )
        except Exception as exc:
            return f"A fresh read after the failure was not possible ({exc}): read the resource before trying again."
        if now.revisions == preview.revisions:
            return "A fresh read after the failure shows no change since the preview: nothing was written."
        moved = ", ".join(
            f"{key} revision {before} -> {now.revisions.get(key)}"
            for key, before in preview.revisions.items()
            if now.revisions.get(key) != before
        )
        return (
            f"A fresh read after the failure shows a change since the preview ({moved}): the write was most likely "
            "applied. Read it (get_flag) before doing anything again."
        )
