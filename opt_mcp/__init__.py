"""opt-mcp: an MCP server for Optimizely Feature Experimentation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("opt-mcp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
