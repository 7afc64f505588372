"""Drive an MCP server with the official Python SDK client and print what it saw as JSON.

Usage: client.py URL MODE PROFILE [TOKEN]
MODE is "legacy" (session-based 2025-11-25 handshake) or "auto" (2026-07-28 when the server
speaks it). PROFILE names the server's tools ("fastmcp" for fastmcp_server.py, "everything" for
the npm reference server). Runs: connect, tools/list, an echo call, a call with progress
notifications, prompts/list, prompts/get, a call with bad arguments, a call to a hidden tool,
then closes the session.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

PROFILES = {
    "fastmcp": {
        "echo": ("echo", {"text": "hello through the gateway"}),
        "progress": ("count", {"n": 3}),
        "prompt": ("greet", {"name": "Ada"}),
        "bad": ("add", {"a": "one", "b": 2}),
        "hidden": ("secret_dump", {}),
    },
    "everything": {
        "echo": ("echo", {"message": "hello through the gateway"}),
        "progress": ("trigger-long-running-operation", {"duration": 0.3, "steps": 3}),
        "prompt": ("args-prompt", {"city": "Paris"}),
        "bad": ("get-sum", {"a": "one", "b": 2}),
        "hidden": ("get-env", {}),
    },
}


async def main() -> None:
    url, mode, profile = sys.argv[1], sys.argv[2], PROFILES[sys.argv[3]]
    token = sys.argv[4] if len(sys.argv) > 4 else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    transport = streamable_http_client(url, http_client=http)
    progress = []

    async def on_progress(value, total, message):
        progress.append([value, total, message])

    out = {}
    async with Client(transport, mode=mode) as client:
        out["protocolVersion"] = client.protocol_version
        out["serverName"] = client.server_info.name if client.server_info else None
        tools = await client.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        echo = await client.call_tool(*profile["echo"])
        out["echo"] = [c.text for c in echo.content if getattr(c, "text", None)]
        out["echoIsError"] = echo.is_error
        counted = await client.call_tool(*profile["progress"], progress_callback=on_progress)
        out["progressResult"] = [c.text for c in counted.content if getattr(c, "text", None)]
        out["progress"] = progress
        prompts = await client.list_prompts()
        out["prompts"] = sorted(p.name for p in prompts.prompts)
        greeting = await client.get_prompt(*profile["prompt"])
        out["greeting"] = [getattr(m.content, "text", "") for m in greeting.messages]
        try:
            bad = await client.call_tool(*profile["bad"])
            out["badArgs"] = {"isError": bad.is_error, "text": [c.text for c in bad.content]}
        except Exception as e:  # the gateway answers with a JSON-RPC error
            out["badArgs"] = {"error": str(e)}
        try:
            hidden = await client.call_tool(*profile["hidden"])
            out["hidden"] = {"isError": hidden.is_error}
        except Exception as e:
            out["hidden"] = {"error": str(e)}
    print(json.dumps(out), flush=True)


asyncio.run(main())
