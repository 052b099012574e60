"""The settings registry (opt_mcp/settings.py): every setting declared once, read through it, documented from it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from opt_mcp.config import Settings
from opt_mcp.hosting import HostedSettings
from opt_mcp.sandbox import SandboxConfig
from opt_mcp.settings import (
    ALLOWED_HOSTS,
    CONFIRM,
    MAX_TOKENS,
    OAUTH_SCOPES,
    REDIS_URL,
    SECRET,
    SETTINGS,
    ConfigError,
    reference,
)

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "opt_mcp"
REFERENCE = ROOT / "docs" / "configuration.md"
VARIABLE = re.compile(r"\b(?:OPT_MCP|OPTIMIZELY)_[A-Z0-9_]*[A-Z0-9]\b")


def _strings() -> list[tuple[Path, int, str]]:
    """Every string literal in the package outside the registry (f-strings' literal parts included)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "settings.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append((path.relative_to(ROOT), node.lineno, node.value))
    return found


def test_the_configuration_reference_is_generated_from_the_settings() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "opt_mcp.settings"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert generated == reference()
    assert REFERENCE.read_text() == generated, (
        "docs/configuration.md differs from opt_mcp/settings.py: regenerate it with "
        "`python -m opt_mcp.settings > docs/configuration.md`"
    )


def test_each_setting_is_declared_once_with_a_one_line_doc() -> None:
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names)) == 35
    for setting in SETTINGS:
        assert setting.doc and "\n" not in setting.doc and "|" not in setting.doc, setting.name
        assert setting.kind.describe(), setting.name
        assert not (setting.secret and setting.shown_default is not None), f"{setting.name}: a secret's default"


def test_no_module_names_a_variable_but_through_the_registry() -> None:
    """A variable's name as a whole string (what reading it by hand takes) appears only in opt_mcp/settings.py;
    elsewhere it is ``SETTING.name``. Messages may mention variables, but only ones that exist."""
    known = {setting.name for setting in SETTINGS}
    by_hand = [f"{path}:{line}: {text!r}" for path, line, text in _strings() if VARIABLE.fullmatch(text)]
    assert not by_hand, "read these through opt_mcp.settings: " + "; ".join(by_hand)
    unknown = [
        f"{path}:{line}: {name}"
        for path, line, text in _strings()
        for name in VARIABLE.findall(text)
        if name not in known
    ]
    assert not unknown, "no such setting: " + "; ".join(unknown)


def test_an_empty_environment_reads_as_each_readers_defaults() -> None:
    read = Settings.from_env({})
    assert read == Settings(secret=read.secret)
    assert HostedSettings.from_env({}, no_auth=True) == HostedSettings(no_auth=True)
    assert SandboxConfig.from_env({}) == SandboxConfig()


def test_blank_is_unset_and_values_are_read_as_their_kind() -> None:
    assert MAX_TOKENS.read({"OPT_MCP_MAX_TOKENS": "  "}) == MAX_TOKENS.default
    assert not MAX_TOKENS.given({"OPT_MCP_MAX_TOKENS": " "}) and MAX_TOKENS.given({"OPT_MCP_MAX_TOKENS": "1"})
    assert CONFIRM.read({"OPT_MCP_CONFIRM": " Token "}) == "token"
    assert ALLOWED_HOSTS.read({"OPT_MCP_ALLOWED_HOSTS": "a.example, ,b.example "}) == ("a.example", "b.example")
    assert OAUTH_SCOPES.read({"OPT_MCP_OAUTH_SCOPES": " read  write "}) == ("read", "write")
    # A signing key is used as given, every character of it: replicas must sign with the same bytes.
    assert SECRET.read({"OPT_MCP_SECRET": " " + "k" * 31 + " "}) == b" " + b"k" * 31 + b" "


@pytest.mark.parametrize("value", ["999", "25001", "6e3", "²", "-5"])
def test_a_malformed_value_names_the_setting_the_range_and_the_value(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        MAX_TOKENS.read({"OPT_MCP_MAX_TOKENS": value})
    assert str(raised.value) == f"OPT_MCP_MAX_TOKENS must be a number of tokens from 1000 to 25000, not {value!r}"


def test_a_malformed_secret_is_never_shown() -> None:
    with pytest.raises(ConfigError) as short:
        SECRET.read({"OPT_MCP_SECRET": "hunter2"})
    with pytest.raises(ConfigError) as url:
        REDIS_URL.read({"OPT_MCP_REDIS_URL": "http://:hunter2@redis"})
    assert "hunter2" not in str(short.value) + str(url.value)
    assert str(short.value) == "OPT_MCP_SECRET must be at least 32 characters"
