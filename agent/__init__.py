"""The agent: instruction -> plan -> ComfyUI graph, session memory, trace, API client, MCP server.
It plans tools from the catalogue and never imports an engine: ComfyUI runs the tools."""
