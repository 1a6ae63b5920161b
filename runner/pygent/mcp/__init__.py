"""`pygent-runner mcp`: this project's hardened sandboxes for any agent, over the Model Context Protocol.

    tools.py       the tool table: bash, write_file, read_file, list_files (one entry each)
    sessions.py    one lazily started sandbox per MCP session, idle timeout, removal
    server.py      the SDK's low-level Server over that table; failures -> tool errors
    transports.py  stdio, Streamable HTTP (loopback by default), the bearer-token check

The command line is cli/mcp.py (cli imports mcp, never the reverse).
Nothing here is imported by `import pygent` or by the CLI at start-up: the mcp
SDK (starlette, uvicorn, ...) is loaded only when `pygent-runner mcp` runs.
"""
