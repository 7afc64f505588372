"""Drive an MCP server with the official Python SDK client and print what it saw as JSON.

Usage: client.py URL MODE [TOKEN]
MODE is "legacy" (session-based 2025-11-25 handshake) or "auto" (2026-07-28 when the server
speaks it). Runs: connect, tools/list, tools/call echo, tools/call count (progress), prompts/list,
prompts/get, then closes the session.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main() -> None:
    url, mode = sys.argv[1], sys.argv[2]
    token = sys.argv[3] if len(sys.argv) > 3 else None
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
        echo = await client.call_tool("echo", {"text": "hello through the gateway"})
        out["echo"] = [c.text for c in echo.content if getattr(c, "text", None)]
        out["echoIsError"] = echo.is_error
        counted = await client.call_tool("count", {"n": 3}, progress_callback=on_progress)
        out["count"] = [c.text for c in counted.content if getattr(c, "text", None)]
        out["progress"] = progress
        prompts = await client.list_prompts()
        out["prompts"] = sorted(p.name for p in prompts.prompts)
        greeting = await client.get_prompt("greet", {"name": "Ada"})
        out["greeting"] = [m.content.text for m in greeting.messages]
        try:
            bad = await client.call_tool("add", {"a": "one", "b": 2})
            out["badArgs"] = {"isError": bad.is_error, "text": [c.text for c in bad.content]}
        except Exception as e:  # the gateway answers with a JSON-RPC error
            out["badArgs"] = {"error": str(e)}
        try:
            hidden = await client.call_tool("secret_dump", {})
            out["hidden"] = {"isError": hidden.is_error}
        except Exception as e:
            out["hidden"] = {"error": str(e)}
    print(json.dumps(out), flush=True)


asyncio.run(main())
