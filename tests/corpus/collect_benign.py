"""Collect the benign half of the poisoning corpus: every tool the MCP reference servers
installed by scripts/test.sh list, read through their own `tools/list` over stdio with the
official Python SDK client.

Usage: collect_benign.py NODE_MODULES_DIR
Prints a JSON array (sorted by server, then tool) of {"server", "package", "version", "tool"}
where "tool" is the whole definition the server sent.
"""

import asyncio
import json
import os
import sys
import tempfile
from importlib.metadata import version as python_version

from mcp import Client, StdioServerParameters

# Placeholder credentials: these servers refuse to start without one, and listing tools calls
# no remote API.
DUMMY_ENV = {
    "GITHUB_PERSONAL_ACCESS_TOKEN": "placeholder",
    "GITLAB_PERSONAL_ACCESS_TOKEN": "placeholder",
    "SLACK_BOT_TOKEN": "placeholder",
    "SLACK_TEAM_ID": "T0000000",
    "BRAVE_API_KEY": "placeholder",
    "GOOGLE_MAPS_API_KEY": "placeholder",
    "EVERART_API_KEY": "placeholder",
    "AWS_ACCESS_KEY_ID": "placeholder",
    "AWS_SECRET_ACCESS_KEY": "placeholder",
    "AWS_REGION": "us-east-1",
}

NODE_SERVERS = [
    ("everything", "@modelcontextprotocol/server-everything", ["dist/index.js", "stdio"]),
    ("filesystem", "@modelcontextprotocol/server-filesystem", ["dist/index.js", "{tmp}"]),
    ("memory", "@modelcontextprotocol/server-memory", ["dist/index.js"]),
    ("sequential-thinking", "@modelcontextprotocol/server-sequential-thinking", ["dist/index.js"]),
    ("github", "@modelcontextprotocol/server-github", ["dist/index.js"]),
    ("gitlab", "@modelcontextprotocol/server-gitlab", ["dist/index.js"]),
    ("slack", "@modelcontextprotocol/server-slack", ["dist/index.js"]),
    ("brave-search", "@modelcontextprotocol/server-brave-search", ["dist/index.js"]),
    ("google-maps", "@modelcontextprotocol/server-google-maps", ["dist/index.js"]),
    ("aws-kb-retrieval", "@modelcontextprotocol/server-aws-kb-retrieval", ["dist/index.js"]),
    ("everart", "@modelcontextprotocol/server-everart", ["dist/index.js"]),
    # Connects to the database only when a tool is called.
    ("postgres", "@modelcontextprotocol/server-postgres", ["dist/index.js", "postgresql://127.0.0.1:1/none"]),
]

PYTHON_SERVERS = [
    ("fetch", "mcp-server-fetch", ["-m", "mcp_server_fetch"]),
    ("git", "mcp-server-git", ["-m", "mcp_server_git"]),
    ("time", "mcp-server-time", ["-m", "mcp_server_time"]),
]


async def list_tools(params: StdioServerParameters) -> list[dict]:
    async with Client(params, mode="legacy") as client:
        tools = await client.list_tools()
        return [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools.tools]


async def main() -> None:
    node_modules = os.path.abspath(sys.argv[1])
    env = {**os.environ, **DUMMY_ENV}
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        servers = []
        for name, package, args in NODE_SERVERS:
            base = os.path.join(node_modules, package)
            with open(os.path.join(base, "package.json")) as f:
                pkg_version = json.load(f)["version"]
            argv = [os.path.join(base, a) if a.endswith(".js") else a.format(tmp=tmp) for a in args]
            servers.append((name, package, pkg_version, StdioServerParameters(command="node", args=argv, env=env, cwd=tmp)))
        for name, package, args in PYTHON_SERVERS:
            servers.append((name, package, python_version(package), StdioServerParameters(command=sys.executable, args=args, env=env, cwd=tmp)))
        for name, package, pkg_version, params in servers:
            for tool in await list_tools(params):
                out.append({"server": name, "package": package, "version": pkg_version, "tool": tool})
    out.sort(key=lambda e: (e["server"], e["tool"]["name"]))
    json.dump(out, sys.stdout, indent=1, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
