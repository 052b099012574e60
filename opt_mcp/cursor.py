"""The one pagination convention of every list tool: an opaque cursor that resumes exactly where a result ended.

A cursor holds the Optimizely page link to fetch next, how many of its items were already returned, the project,
and a fingerprint of the filters, so it cannot be replayed against another query or project. It is not a secret,
and the link inside is checked again by the client before it is followed.
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
    project_id: int
    link: str
    skip: int
    query: str

    def encode(self) -> str:
        raw = json.dumps({"v": 1, "p": self.project_id, "l": self.link, "s": self.skip, "q": self.query})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, *, project_id: int, query: str) -> Cursor:
        try:
            data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            cursor = cls(project_id=int(data["p"]), link=str(data["l"]), skip=int(data["s"]), query=str(data["q"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise CursorError(
                "cursor is not one this server returned: call again without cursor to start from the first page"
            ) from None
        if cursor.project_id != project_id or cursor.query != query or cursor.skip < 0:
            raise CursorError(
                "cursor belongs to another project or other filters: pass the same project_id and filters as the "
                "call that returned it, or call again without cursor"
            )
        return cursor


def fingerprint(filters: dict[str, Any]) -> str:
    """A short, stable digest of a query's filters."""
    text = json.dumps(filters, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
