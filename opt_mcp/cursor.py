"""The one pagination convention of every list tool: an opaque cursor that resumes exactly where a result ended.

A cursor holds the Optimizely page link to fetch next (relative to the collection, so the project is implied), how
many of its items were already returned, and a fingerprint of the project and filters, so it cannot be replayed
against another query or project. It is not a secret; the link is checked again by the client before it is
followed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any


class CursorError(ValueError):
    """A cursor that cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class Cursor:
    """A position in a paged collection: the page ``link`` (under ``collection``), and ``skip`` items of it done."""

    collection: str
    link: str
    skip: int
    query: str

    def encode(self) -> str:
        # Only the part of the link after the collection's path is kept: a cursor is read by a model, and every
        # character of base64 costs it most of a token.
        if not self.link.startswith(self.collection):
            raise ValueError(f"{self.link!r} is not under {self.collection!r}")
        rest = self.link[len(self.collection) :]
        return base64.urlsafe_b64encode(f"1|{self.skip}|{self.query}|{rest}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, *, collection: str, query: str) -> Cursor:
        try:
            version, skip, fingerprint_, rest = (
                base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode().split("|", 3)
            )
            cursor = cls(collection=collection, link=collection + rest, skip=int(skip), query=fingerprint_)
            if version != "1" or cursor.skip < 0 or (rest and not rest.startswith("?")):
                raise ValueError(text)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise CursorError(
                "cursor is not one this server returned: call again without cursor to start from the first page"
            ) from None
        if cursor.query != query:
            raise CursorError(
                "cursor belongs to another project or other filters: pass the same project_id and filters as the "
                "call that returned it, or call again without cursor"
            )
        return cursor


def fingerprint(scope: dict[str, Any]) -> str:
    """A short, stable digest of what a query is about (project and filters)."""
    text = json.dumps(scope, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]
