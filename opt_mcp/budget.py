"""The context budget: what a result costs in tokens, and fitting a result into a budget.

Every tool result is measured as it is sent — its structured content (compact JSON) plus its text rendering — and
must fit the per-call budget (``OPT_MCP_MAX_TOKENS``), which is never above the hard ceiling (Claude Code's default
limit for MCP output). The estimate is cheap, with no tokenizer on the hot path, and calibrated to err high against
a real BPE tokenizer (cl100k) on this project's own outputs: ``bench/run.py`` reports the ratio.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, Literal, TypeVar

from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel

from opt_mcp.calls import note_result_tokens

Detail = Literal["summary", "standard", "full"]

# The pieces a BPE tokenizer makes of text, counted class by class (each scan runs in C): opaque runs such as
# cursors (base64 costs about 0.7 tokens a character), words (one token up to 12 letters, then about 8 letters a
# token), digit groups (3 digits a token), non-ASCII characters (half a token per UTF-8 byte: an emoji is 2, a CJK
# character 1.5), whitespace other than a single space, and runs of ASCII punctuation (one token a run, a little
# more for long runs). Weights fitted against cl100k on this project's own outputs; bench/run.py reports the ratio.
_RUNS = re.compile(r"(?<![\w+/=-])[\w+/=-]{24,}")  # candidates; opaque when they mix upper case, lower case and digits
# (The look-behinds start a match only where a run starts: the same matches, without rescanning inside short runs.)
_UPPER, _LOWER, _DIGIT = re.compile("[A-Z]"), re.compile("[a-z]"), re.compile(r"\d")
_WORDS = re.compile(r"[A-Za-z]+")
_LONG_WORDS = re.compile(r"(?<![A-Za-z])[A-Za-z]{13,}")
_DIGITS = re.compile(r"\d+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Runs of two or more whitespace characters, and single ones other than a space: the same matches as
# r"\s{2,}|[^\S ]", but starting with a character class lets the scan skip ahead (2-4 times quicker on results).
_SPACING = re.compile(r"\s(?:\s+|(?<! ))")
_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]+")


T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V", bound=BaseModel)


def estimate_tokens(text: str) -> int:
    """A conservative estimate of the tokens ``text`` costs a model."""
    opaque = 0

    def drop_opaque(match: re.Match[str]) -> str:
        nonlocal opaque
        run = match.group()
        if _UPPER.search(run) and _LOWER.search(run) and _DIGIT.search(run):
            opaque += len(run)
            return " "
        return run

    text = _RUNS.sub(drop_opaque, text)
    words = len(_WORDS.findall(text)) + sum(map(len, _LONG_WORDS.findall(text))) / 8
    digit_runs = _DIGITS.findall(text)
    digits = (sum(map(len, digit_runs)) + 2 * len(digit_runs)) / 3
    punctuation_runs = _PUNCTUATION.findall(text)
    punctuation = len(punctuation_runs) + sum(map(len, punctuation_runs)) / 10
    # Most results are ASCII: a check in C then spares a scan and an encoding.
    non_ascii_bytes = 0 if text.isascii() else len(text.encode()) - len(text) + len(_NON_ASCII.findall(text))
    spacing = 1.5 * len(_SPACING.findall(text))
    return int(0.75 * opaque + words + digits + punctuation + non_ascii_bytes / 2 + spacing) + 1


def at_most(text: str) -> float:
    """A bound ``estimate_tokens`` never exceeds, from the size alone: no character class above costs more than
    1.5 tokens a UTF-8 byte (a property test holds the estimate to it)."""
    return 1.5 * len(text.encode()) + 1


def structured(view: BaseModel) -> dict[str, object]:
    """A view as structured content: JSON-ready, without optional fields left at their defaults."""
    return view.model_dump(mode="json", exclude_defaults=True)


def respond(view: BaseModel, text: str, content: dict[str, object] | None = None) -> CallToolResult:
    """The tool result: the text a model reads, and the structured content an app reads (the same facts);
    ``content`` is the view's structured content when it is already at hand."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured(view) if content is None else content,
    )


@dataclass
class Fitted(Generic[V]):
    """A candidate result: its view, its text rendering, and what the two cost together."""

    view: V
    text: str

    @cached_property
    def content(self) -> dict[str, object]:
        """The structured content (made once: it is both measured and sent)."""
        return structured(self.view)

    @cached_property
    def compact(self) -> str:
        """The structured content as compact JSON, as it is measured."""
        return json.dumps(self.content, separators=(",", ":"), ensure_ascii=False)

    @cached_property
    def tokens(self) -> int:
        """What the result costs: its structured content plus its text rendering."""
        return estimate_tokens(self.compact) + estimate_tokens(self.text)

    def fits(self, budget: int) -> bool:
        """Whether the result fits ``budget``. Most results are small enough for their size alone to prove it,
        which spares the estimate on the hot path; the others are estimated."""
        return at_most(self.compact) + at_most(self.text) <= budget or self.tokens <= budget

    def response(self) -> CallToolResult:
        # For the call's log line: the estimate when fitting needed one; else (a result small enough for its size
        # alone to prove the fit) a third of its bytes, which errs high on this project's output and spares every
        # small result an estimate nobody needs.
        measured = self.__dict__.get("tokens")  # set only once the cached property ran
        note_result_tokens(
            measured if measured is not None else (len(self.compact.encode()) + len(self.text.encode())) // 3 + 1
        )
        return respond(self.view, self.text, self.content)


def largest_fitting(
    items: Sequence[T], build: Callable[[Sequence[T]], R], fits: Callable[[R], bool]
) -> tuple[R, int] | None:
    """The result built from the longest prefix of ``items`` that fits, and that prefix's length.

    None when not even the empty prefix fits. Binary search: the cost of a prefix grows with its length.
    """
    low, high = 0, len(items)
    best: tuple[R, int] | None = None
    while low <= high:
        middle = (low + high) // 2
        candidate = build(items[:middle])
        if fits(candidate):
            best = (candidate, middle)
            low = middle + 1
        else:
            high = middle - 1
    return best


def clip(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters with a marker saying how much was cut."""
    if len(text) <= limit:
        return text, False
    return f"{text[:limit]}… [{len(text) - limit} more characters]", True
