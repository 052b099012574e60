"""opt-mcp: an MCP server for Optimizely Feature Experimentation."""

# The one place the version is written: the build reads it from here (pyproject's [tool.hatch.version]), and a
# constant spares every start-up a lookup in the installed distributions.
__version__ = "0.1.0"
