"""What one list_flags call may show of an API page of flags: the flags from the cursor's position on, at most its
limit, less those its environment scope leaves out; and the cursor past however many of them a result shows."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from opt_mcp.api.models import Flag, FlagsPage
from opt_mcp.cursor import Cursor


@dataclass(frozen=True)
class Scope:
    """enabled= and rule_type= judged in one environment, from the flag's own state there."""

    environment: str
    enabled: bool | None
    rule_type: str | None

    @classmethod
    def of(cls, environment: str | None, enabled: bool | None, rule_type: str | None) -> Scope | None:
        """The scope of a call, when it has one: an environment, and enabled= or rule_type= to judge in it."""
        if environment and (enabled is not None or rule_type):
            return cls(environment, enabled, rule_type)
        return None

    def matches(self, flag: Flag) -> bool:
        env = flag.environments.get(self.environment)
        if env is None:
            return False
        if self.enabled is not None and env.enabled != self.enabled:
            return False
        if self.rule_type is None:
            return True
        return any(r.type == self.rule_type for r in env.rules_detail) or self.rule_type in env.rules_summary

    def describe(self) -> str:
        parts = [] if self.enabled is None else ["on" if self.enabled else "off"]
        if self.rule_type is not None:
            parts.append(f"with a {self.rule_type} rule")
        return " and ".join(parts)


@dataclass(frozen=True)
class FlagWindow:
    """The part of ``page`` a call starting at ``position`` covers: at most ``limit`` of its items, of which it may
    show those ``scope`` keeps (``flags``)."""

    project_id: int
    page: FlagsPage
    position: Cursor
    limit: int
    scope: Scope | None = None

    @cached_property
    def _covered(self) -> list[Flag]:
        skip = self.position.skip
        return self.page.items[skip : skip + self.limit]

    @cached_property
    def _kept(self) -> list[int]:
        """Where in the covered items each flag the scope keeps is."""
        return [i for i, flag in enumerate(self._covered) if self.scope is None or self.scope.matches(flag)]

    @cached_property
    def flags(self) -> list[Flag]:
        """The flags a result may show, in the page's order."""
        return [self._covered[i] for i in self._kept]

    @property
    def scoped_out(self) -> int:
        """How many covered items the scope leaves out."""
        return len(self._covered) - len(self._kept)

    def reach(self, shown: int) -> int:
        """How many of the covered items a result showing the first ``shown`` flags is past: the flags it shows and
        the ones left out among them, and all of them when it shows every flag."""
        return len(self._covered) if shown == len(self.flags) else self._kept[shown]

    def past_first(self) -> int:
        """The reach of a result that shows none of the flags but moves past the first (it was too large to show)."""
        return self._kept[0] + 1

    def next_cursor(self, reach: int) -> str | None:
        """The cursor of the call after a result that reached ``reach`` covered items; None after the last page."""
        position, end = self.position, self.position.skip + reach
        if end < len(self.page.items):
            return Cursor(position.collection, position.link, end, position.query).encode()
        if self.page.next_link is not None:
            return Cursor(position.collection, _without_fragment(self.page.next_link), 0, position.query).encode()
        return None


def _without_fragment(link: str) -> str:
    # next_url carries a '#page' fragment that no request sends; it would only lengthen the cursor.
    return link.partition("#")[0]
