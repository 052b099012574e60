"""The argument types several tools, prompts and resources share: project ids, flag and environment keys, and the
kinds of rule (which of them are experiments).

A key type holds only Optimizely's rule for the key; each parameter adds its own description, which the tool's
schema shows, e.g. ``Annotated[FlagKey, Field(description="the flag's key")]``.
"""

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

# Optimizely's rule for flag and environment keys: letters, digits, '-' and '_', at most 64 characters.
FLAG_KEY_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ENVIRONMENT_KEY_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

FlagKey = Annotated[str, Field(pattern=FLAG_KEY_PATTERN)]
EnvironmentKey = Annotated[str, Field(pattern=ENVIRONMENT_KEY_PATTERN)]

RuleType = Literal["a/b", "multi_armed_bandit", "targeted_delivery"]
BANDIT = "multi_armed_bandit"
# The rules that are experiments, with results to read; a targeted delivery has none.
EXPERIMENT_TYPES = ("a/b", BANDIT)


def _not_a_flag(value: object) -> object:
    # Lax validation would read true as 1 and false as 0: an id is a number (or its digits), never a flag.
    if isinstance(value, bool):
        raise ValueError("must be a project's numeric id, from list_projects, not true or false")
    return value


def _positive(value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise ValueError("must be a project's numeric id, from list_projects")
    return value


ProjectId = Annotated[
    int | None,
    BeforeValidator(_not_a_flag),
    AfterValidator(_positive),
    Field(
        description="default: the configured project",
    ),
]
