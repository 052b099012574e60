"""server.json, the MCP registry manifest: valid against the registry's schema and true to the package."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from opt_mcp import __version__
from opt_mcp.settings import SETTINGS, Choice

ROOT = Path(__file__).parent.parent
MANIFEST: dict[str, Any] = json.loads((ROOT / "server.json").read_text())
SCHEMA = json.loads((Path(__file__).parent / "data" / "specs" / "mcp-registry-server.schema.json").read_text())
# The settings a desktop (stdio) user can set; hosted-only settings are the operator's, not the package's.
STDIO_SETTINGS = {setting.name: setting for setting in SETTINGS if "stdio" in setting.modes}


def package() -> dict[str, Any]:
    (pypi,) = [p for p in MANIFEST["packages"] if p["registryType"] == "pypi"]
    found: dict[str, Any] = pypi
    return found


def test_manifest_is_valid_against_the_registry_schema_it_names() -> None:
    assert MANIFEST["$schema"] == SCHEMA["$id"]
    jsonschema.Draft7Validator(SCHEMA).validate(MANIFEST)


def test_the_schema_check_catches_what_the_registry_refuses() -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    too_long = {**MANIFEST, "description": "x" * 101}
    no_namespace = {**MANIFEST, "name": "opt-mcp"}
    assert not validator.is_valid(too_long)
    assert not validator.is_valid(no_namespace)


def test_versions_agree_with_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dynamic"] == ["version"]  # read from opt_mcp/__init__.py by the build
    assert MANIFEST["version"] == package()["version"] == __version__ == metadata.version("opt-mcp")
    assert package()["identifier"] == project["name"]


def test_readme_carries_the_pypi_ownership_line() -> None:
    assert f"mcp-name: {MANIFEST['name']}" in (ROOT / "README.md").read_text()


def test_every_setting_the_server_reads_is_declared_and_no_other() -> None:
    declared = {variable["name"] for variable in package()["environmentVariables"]}
    assert declared == set(STDIO_SETTINGS)


def test_secrets_are_marked_secret_and_formats_and_defaults_are_the_codes() -> None:
    variables = {v["name"]: v for v in package()["environmentVariables"]}
    secret = {name for name, v in variables.items() if v.get("isSecret")}
    assert secret == {  # a Redis URL may hold a password
        "OPTIMIZELY_API_TOKEN",
        "OPTIMIZELY_REFRESH_TOKEN",
        "OPTIMIZELY_OAUTH_CLIENT_SECRET",
        "OPT_MCP_SECRET",
        "OPT_MCP_REDIS_URL",
    }
    assert not any("default" in variables[name] for name in secret)
    for name, variable in variables.items():
        setting = STDIO_SETTINGS[name]
        kind = setting.kind
        assert variable.get("isSecret", False) == setting.secret, name
        assert variable.get("default") == setting.shown_default, name
        assert variable.get("format", "string") == kind.format, name
        assert variable.get("choices") == (list(kind.choices) if isinstance(kind, Choice) else None), name


@pytest.mark.parametrize("kind", ["streamable-http", "sse"])
def test_remotes_describe_the_hosted_endpoints_and_their_auth(kind: str) -> None:
    (remote,) = [r for r in MANIFEST["remotes"] if r["type"] == kind]
    assert remote["url"].endswith("/mcp" if kind == "streamable-http" else "/sse")
    headers = {h["name"]: h for h in remote["headers"]}
    assert headers["Authorization"]["isRequired"] and headers["Authorization"]["isSecret"]
    assert headers["X-Optimizely-Token"]["isSecret"]
    assert set(re.findall(r"{(\w+)}", remote["url"])) == set(remote["variables"])
