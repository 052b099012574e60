"""The MCP tools, grouped by resource."""
