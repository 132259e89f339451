"""The MCP server (AGENTS.md, "MCP server"): the workflow capability's tools for AI
agents over streamable HTTP at ``/mcp`` and over stdio (``flask --app app mcp``).

``service`` holds the reads the tools need beyond the other services (a page of
workflows, a workflow by id or name, a run's progress); ``tools`` the tools (their JSON
Schemas, scopes and handlers, thin over the services); ``server`` the SDK's low-level
server around them (errors as JSON-RPC codes); ``web`` the ``/mcp`` endpoint inside the
WSGI app; ``cli`` the stdio command.
"""
