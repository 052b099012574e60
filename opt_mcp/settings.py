"""Every setting opt-mcp reads from its environment, declared once: its variable, the kind of value it takes (type
and range), its default, whether it is a secret, the part of opt-mcp that reads it, and a one-line doc.

The readers (``Settings`` for the server, ``SandboxConfig``, ``HostedSettings``, the log format) read through these
declarations, never ``os.environ`` by name; docs/configuration.md is generated from them (``python -m
opt_mcp.settings > docs/configuration.md``) and tests hold both, and server.json, to them.

A leaf: it imports nothing of opt-mcp, so every layer (the sandbox included) may read its settings here. Unset or
blank, a setting takes its default; a malformed one is a ConfigError naming the variable, what it takes and (unless
it is a secret) the value it was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Generic, Literal, TypeVar, get_args
from urllib.parse import urlsplit

T = TypeVar("T")
V_co = TypeVar("V_co", covariant=True)
C = TypeVar("C", bound=str)

Group = Literal["server", "sandbox", "logging", "hosted"]
# The modes each group is read in: hosted settings by ``serve --transport http|sse`` only, the others always.
MODES: dict[Group, tuple[str, ...]] = {
    "server": ("stdio", "hosted"),
    "sandbox": ("stdio", "hosted"),
    "logging": ("stdio", "hosted"),
    "hosted": ("hosted",),
}
# How writes are confirmed (OPT_MCP_CONFIRM): declared with the setting, acted on by opt_mcp.guard.
ConfirmMode = Literal["elicit", "token", "production-only"]
# What OPT_MCP_MAX_TOKENS may be: the hard ceiling is Claude Code's default limit for MCP output, so no result is
# ever cut by the client whatever the setting.
MIN_MAX_TOKENS = 1_000
DEFAULT_MAX_TOKENS = 6_000
HARD_CEILING = 25_000
TOKEN_TTL_SECONDS = 600  # a confirmation token's validity, unless OPT_MCP_CONFIRM_TTL says otherwise


class ConfigError(ValueError):
    """A missing or malformed setting; its message names the setting and the fix."""


# ------------------------------------------------------------------------------------------------------------------
# Kinds of value
# ------------------------------------------------------------------------------------------------------------------


class Kind(Generic[V_co]):
    """How a setting's text is read. ``parse`` gets the text stripped (unless ``verbatim``) and never blank; a
    malformed value raises ValueError with what the setting takes ("must be ..."), which the setting names.

    Kinds and settings are plain classes, not dataclasses: this module loads at every start-up, and a dataclass
    costs about half a millisecond to define."""

    __slots__ = ()
    # The value's format in the MCP registry's manifest (server.json): string, number, boolean or filepath.
    format = "string"
    verbatim = False

    def parse(self, text: str) -> V_co:
        raise NotImplementedError

    def describe(self) -> str:
        """What the setting takes, for the configuration reference."""
        raise NotImplementedError


class Text(Kind[str]):
    __slots__ = ()

    def parse(self, text: str) -> str:
        return text

    def describe(self) -> str:
        return "text"


class Token(Kind[str]):
    """A bearer credential: what fits in an ``Authorization`` header, so no spaces (``hint`` says what to paste)."""

    __slots__ = ("hint",)

    def __init__(self, hint: str) -> None:
        self.hint: Final = hint

    def parse(self, text: str) -> str:
        if any(c.isspace() for c in text):
            raise ValueError(f"contains spaces: {self.hint}")
        return text

    def describe(self) -> str:
        return "a token, without spaces"


class Key(Kind[bytes]):
    """A signing key, used as given (not stripped: the same bytes on every replica)."""

    __slots__ = ("min_length",)
    verbatim = True

    def __init__(self, min_length: int) -> None:
        self.min_length: Final = min_length

    def parse(self, text: str) -> bytes:
        if len(text.encode()) < self.min_length:
            raise ValueError(f"must be at least {self.min_length} characters")
        return text.encode()

    def describe(self) -> str:
        return f"at least {self.min_length} characters"


class FilePath(Kind[str]):
    __slots__ = ()
    format = "filepath"

    def parse(self, text: str) -> str:
        return text

    def describe(self) -> str:
        return "a file path"


class Url(Kind[str]):
    """A URL with one of ``schemes``, naming a host unless ``host`` is False (a unix:// socket has none); ``says``
    is how a message names it ("an http(s) URL")."""

    __slots__ = ("example", "host", "says", "schemes")

    def __init__(self, schemes: tuple[str, ...], says: str, example: str = "", *, host: bool = True) -> None:
        self.schemes: Final = schemes
        self.says: Final = says
        self.example: Final = example
        self.host: Final = host

    def parse(self, text: str) -> str:
        parts = urlsplit(text)
        if parts.scheme not in self.schemes or (self.host and not parts.netloc):
            raise ValueError(f"must be {self.describe()}")
        return text

    def describe(self) -> str:
        return f"{self.says} like {self.example}" if self.example else self.says


class Whole(Kind[int]):
    """A whole number from ``low`` to ``high`` (no upper bound when None); ``what`` is how the message names it."""

    __slots__ = ("high", "low", "what")
    format = "number"

    def __init__(self, low: int, high: int | None = None, what: str = "a whole number") -> None:
        self.low: Final = low
        self.high: Final = high
        self.what: Final = what

    def parse(self, text: str) -> int:
        number = int(text) if text.isascii() and text.isdigit() else -1
        if number < self.low or (self.high is not None and number > self.high):
            raise ValueError(f"must be {self.describe()}")
        return number

    def describe(self) -> str:
        return self.what if self.high is None else f"{self.what} from {self.low} to {self.high}"


class Flag(Kind[bool]):
    __slots__ = ()
    format = "boolean"

    def parse(self, text: str) -> bool:
        value = text.lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"must be {self.describe()}")

    def describe(self) -> str:
        return "true or false (1/0, yes/no)"


class Choice(Kind[C]):
    """One of ``choices``, in any case."""

    __slots__ = ("choices",)

    def __init__(self, choices: tuple[C, ...]) -> None:
        self.choices: Final = choices

    def parse(self, text: str) -> C:
        for choice in self.choices:
            if choice == text.lower():
                return choice
        raise ValueError(f"must be {self.describe()}")

    def describe(self) -> str:
        return f"{', '.join(self.choices[:-1])} or {self.choices[-1]}"


class Names(Kind[tuple[str, ...]]):
    """A list, split at ``separator`` (None: at any whitespace); blank items are dropped."""

    __slots__ = ("separator",)

    def __init__(self, separator: str | None = ",") -> None:
        self.separator: Final = separator

    def parse(self, text: str) -> tuple[str, ...]:
        return tuple(item.strip() for item in text.split(self.separator) if item.strip())

    def describe(self) -> str:
        return "a comma-separated list" if self.separator == "," else "a space-separated list"


# ------------------------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------------------------


class Setting(Generic[T]):
    """One environment variable: its kind of value, its default, who reads it and what it does. A ``secret`` is
    never shown: not in an error, the reference's defaults or server.json."""

    __slots__ = ("default", "doc", "group", "kind", "name", "secret")

    def __init__(self, name: str, kind: Kind[T], default: T, group: Group, doc: str, *, secret: bool = False) -> None:
        self.name: Final = name
        self.kind: Final = kind
        self.default: Final = default
        self.group: Final = group
        self.doc: Final = doc
        self.secret: Final = secret

    def __repr__(self) -> str:
        return f"Setting({self.name!r})"

    def given(self, environ: Mapping[str, str]) -> bool:
        """Set to something other than blanks."""
        return bool(environ.get(self.name, "").strip())

    def read(self, environ: Mapping[str, str]) -> T:
        """The value in ``environ``, or the default when unset or blank; ConfigError when malformed."""
        raw = environ.get(self.name, "")
        if not raw.strip():
            return self.default
        text = raw if self.kind.verbatim else raw.strip()
        try:
            return self.kind.parse(text)
        except ValueError as exc:
            shown = "" if self.secret else f", not {text!r}"
            raise ConfigError(f"{self.name} {exc}{shown}") from None

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES[self.group]

    @property
    def shown_default(self) -> str | None:
        """The default as it would be written in the environment; None when there is none to write."""
        value: Any = self.default
        if value is None or value in ("", ()):
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)


_HTTP = ("http", "https")

# Optimizely, and the server itself: read by ``opt_mcp.config.Settings`` in every mode.
API_TOKEN = Setting(
    "OPTIMIZELY_API_TOKEN",
    Token("paste the token alone, without 'Bearer'"),
    None,
    "server",
    "Optimizely personal access token (or OAuth access token). Unset, and no refresh token either: the embedded "
    "sandbox runs instead, and the server says so.",
    secret=True,
)
REFRESH_TOKEN = Setting(
    "OPTIMIZELY_REFRESH_TOKEN",
    Token("paste the refresh token alone"),
    None,
    "server",
    "OAuth refresh token: the access token is refreshed when it expires or is refused, and fetched on first use "
    "when OPTIMIZELY_API_TOKEN is unset. Needs the OAuth app's client id and secret.",
    secret=True,
)
OAUTH_CLIENT_ID = Setting(
    "OPTIMIZELY_OAUTH_CLIENT_ID",
    Text(),
    "",
    "server",
    "Client id of the OAuth app the refresh token belongs to (from its settings in Optimizely).",
)
OAUTH_CLIENT_SECRET = Setting(
    "OPTIMIZELY_OAUTH_CLIENT_SECRET",
    Text(),
    "",
    "server",
    "Client secret of that OAuth app.",
    secret=True,
)
TOKEN_URL = Setting(
    "OPTIMIZELY_OAUTH_TOKEN_URL",
    Url(_HTTP, "an http(s) URL", "https://app.optimizely.com/oauth2/token"),
    "https://app.optimizely.com/oauth2/token",
    "server",
    "Where the refresh token is exchanged for an access token.",
)
BASE_URL = Setting(
    "OPTIMIZELY_API_BASE_URL",
    Url(_HTTP, "an http(s) URL", "https://api.optimizely.com"),
    "https://api.optimizely.com",
    "server",
    "Optimizely's API: the Flags API under /flags/v1, the REST API under /v2.",
)
PROJECT_ID = Setting(
    "OPTIMIZELY_PROJECT_ID",
    Whole(1, what="a project's numeric id"),
    None,
    "server",
    "Default project of the calls that name none (unset: the sandbox's project, or none with a token).",
)
READ_ONLY = Setting(
    "OPT_MCP_READ_ONLY",
    Flag(),
    False,
    "server",
    "true hides every tool that writes (as `opt-mcp serve --read-only` does).",
)
SANDBOX = Setting(
    "OPT_MCP_SANDBOX",
    Flag(),
    None,
    "server",
    "true: the sandbox even with a token (as `--sandbox` does); false: never the sandbox, so a token is required "
    "(hosted: people bring their own). Unset: the sandbox when no token is set.",
)
MAX_TOKENS = Setting(
    "OPT_MCP_MAX_TOKENS",
    Whole(MIN_MAX_TOKENS, HARD_CEILING, "a number of tokens"),
    DEFAULT_MAX_TOKENS,
    "server",
    f"Context budget of one tool result; {HARD_CEILING} is the hard ceiling (Claude Code's default limit for MCP "
    "output).",
)
CONFIRM = Setting(
    "OPT_MCP_CONFIRM",
    Choice[ConfirmMode](get_args(ConfirmMode)),
    "elicit",
    "server",
    "How writes are confirmed: elicit asks in the client when it can (else a confirmation token), token always "
    "returns a preview and a token, production-only needs no confirmation to toggle a non-production environment.",
)
CONFIRM_TTL = Setting(
    "OPT_MCP_CONFIRM_TTL",
    Whole(10, 3600, "a number of seconds"),
    TOKEN_TTL_SECONDS,
    "server",
    "Seconds a confirmation token stays valid.",
)
SECRET = Setting(
    "OPT_MCP_SECRET",
    Key(32),
    None,
    "server",
    "Key that signs confirmation tokens: the same on every replica (unset: random per process).",
    secret=True,
)
AUDIT_LOG = Setting(
    "OPT_MCP_AUDIT_LOG",
    FilePath(),
    None,
    "server",
    "File the audit trail of writes is appended to, as JSON lines (unset: the log on stderr).",
)
LEDGER_FILE = Setting(
    "OPT_MCP_LEDGER_FILE",
    FilePath(),
    None,
    "server",
    "SQLite file of used confirmation tokens, shared by the worker processes of one host (unset: in memory, or a "
    "temporary file for `--workers`).",
)
REDIS_URL = Setting(
    "OPT_MCP_REDIS_URL",
    Url(("redis", "rediss", "unix"), "a redis://, rediss:// or unix:// URL", "redis://redis:6379/0", host=False),
    None,
    "server",
    "Redis shared by replicas: the used-token ledger, rate-limit budgets, caches and the audit stream (a secret: "
    "the URL may hold a password).",
    secret=True,
)
RESULTS_CACHE_SECONDS = Setting(
    "OPT_MCP_RESULTS_CACHE_SECONDS",
    Whole(0, 3600, "a number of seconds"),
    60,
    "server",
    "Seconds an experiment's results are reused for the same question (0: never).",
)

# The embedded sandbox: read by ``opt_mcp.sandbox.config.SandboxConfig``, for the server and `opt-mcp sandbox`.
SANDBOX_FLAGS = Setting(
    "OPT_MCP_SANDBOX_FLAGS",
    Whole(0, 100_000),
    0,
    "sandbox",
    "Generated flags added to the sandbox's sample project (as `opt-mcp sandbox --flags` does).",
)
SANDBOX_SEED = Setting(
    "OPT_MCP_SANDBOX_SEED",
    Whole(0, 2**63 - 1),
    0,
    "sandbox",
    "Seed of the generated flags and results: the same seed, the same data.",
)
SANDBOX_UNLIMITED = Setting(
    "OPT_MCP_SANDBOX_UNLIMITED",
    Flag(),
    False,
    "sandbox",
    "true lifts the sandbox's rate limits (load tests).",
)

# Logging: read by ``opt_mcp.logs.configure`` in every process.
LOG_FORMAT = Setting(
    "OPT_MCP_LOG_FORMAT",
    Choice(("text", "json")),
    "text",
    "logging",
    "Log lines on stderr: text for a person, json for a log pipeline (one JSON object a line).",
)

# Hosted team mode: read by ``opt_mcp.hosting.HostedSettings`` for `opt-mcp serve --transport http|sse`.
STATELESS = Setting(
    "OPT_MCP_STATELESS",
    Flag(),
    False,
    "hosted",
    "true: no server-side sessions, so any replica answers any request (as `--stateless` does).",
)
AUTH_TOKENS_FILE = Setting(
    "OPT_MCP_AUTH_TOKENS_FILE",
    FilePath(),
    None,
    "hosted",
    "File of the server's own bearer tokens, one `name:token` a line (or OAuth with OPT_MCP_OAUTH_ISSUER).",
)
OPTIMIZELY_TOKENS_FILE = Setting(
    "OPT_MCP_OPTIMIZELY_TOKENS_FILE",
    FilePath(),
    None,
    "hosted",
    "File of each person's Optimizely token, `name:token` lines, used when their request brings none.",
)
OAUTH_ISSUER = Setting(
    "OPT_MCP_OAUTH_ISSUER",
    Url(_HTTP, "an http(s) URL"),
    None,
    "hosted",
    "OAuth authorization server whose tokens let people in (needs the introspection URL and the public URL).",
)
OAUTH_INTROSPECTION_URL = Setting(
    "OPT_MCP_OAUTH_INTROSPECTION_URL",
    Url(_HTTP, "an http(s) URL"),
    None,
    "hosted",
    "Its RFC 7662 introspection endpoint, where each token is checked.",
)
INTROSPECTION_CLIENT_ID = Setting(
    "OPT_MCP_OAUTH_CLIENT_ID",
    Text(),
    None,
    "hosted",
    "Client id this server introspects with, when the endpoint asks for one.",
)
INTROSPECTION_CLIENT_SECRET = Setting(
    "OPT_MCP_OAUTH_CLIENT_SECRET",
    Text(),
    None,
    "hosted",
    "Its client secret.",
    secret=True,
)
OAUTH_SCOPES = Setting(
    "OPT_MCP_OAUTH_SCOPES",
    Names(separator=None),
    (),
    "hosted",
    "Scopes a token must carry.",
)
PUBLIC_URL = Setting(
    "OPT_MCP_PUBLIC_URL",
    Url(_HTTP, "an http(s) URL"),
    None,
    "hosted",
    "This server's public origin: tokens must be issued for it plus /mcp (RFC 8707), and RFC 9728 metadata names it.",
)
ALLOWED_HOSTS = Setting(
    "OPT_MCP_ALLOWED_HOSTS",
    Names(),
    (),
    "hosted",
    "Host names clients reach the server by, besides loopback (DNS-rebinding protection; * for a proxy that owns "
    "Host).",
)
ALLOWED_ORIGINS = Setting(
    "OPT_MCP_ALLOWED_ORIGINS",
    Names(),
    (),
    "hosted",
    "Browser origins allowed besides loopback's.",
)
CORS_ORIGINS = Setting(
    "OPT_MCP_CORS_ORIGINS",
    Names(),
    (),
    "hosted",
    "Origins answered with CORS headers (unset: no CORS).",
)
MAX_BODY_BYTES = Setting(
    "OPT_MCP_MAX_BODY_BYTES",
    Whole(1024, 64 << 20),
    1 << 20,
    "hosted",
    "Largest request body accepted, in bytes (larger: 413).",
)
MAX_IN_FLIGHT = Setting(
    "OPT_MCP_MAX_IN_FLIGHT",
    Whole(1, 1000),
    8,
    "hosted",
    "Requests in flight per person; one over it waits up to 10 s, then 429.",
)

# Every setting, in the order above (the reference's order).
SETTINGS: tuple[Setting[Any], ...] = tuple(value for value in list(globals().values()) if isinstance(value, Setting))

_TITLES: dict[Group, str] = {
    "server": "Server (every mode)",
    "sandbox": "Sandbox",
    "logging": "Logging",
    "hosted": "Hosted team mode (`opt-mcp serve --transport http` or `sse`)",
}


def reference() -> str:
    """docs/configuration.md: every setting, by group."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from opt_mcp/settings.py by `python -m opt_mcp.settings > docs/configuration.md`: change the",
        "settings there, then regenerate (tests/test_settings.py fails while the two differ). -->",
        "",
        "Every setting is an environment variable. Unset or blank, a setting takes its default; a malformed one stops",
        "opt-mcp with one line that names it (and never shows a secret). A command-line flag, where there is one,",
        "wins over its variable.",
    ]
    for group, title in _TITLES.items():
        lines += ["", f"## {title}", "", "| Variable | Takes | Default | What it does |", "| --- | --- | --- | --- |"]
        for setting in SETTINGS:
            if setting.group == group:
                takes = setting.kind.describe() + (" (secret)" if setting.secret else "")
                default = f"`{setting.shown_default}`" if setting.shown_default is not None else ""
                lines.append(f"| `{setting.name}` | {takes} | {default} | {setting.doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
