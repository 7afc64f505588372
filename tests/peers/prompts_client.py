"""Managed prompts through the gateway, seen by the official Python SDK client; prints JSON.

Usage: prompts_client.py URL MODE
Lists the prompts (with the version in each entry's _meta), gets `triage` with an argument that
looks like a placeholder (it must come back literally), gets `greet` (a managed prompt that
hides the server's own), and gets `triage` without its required argument (an error).
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

VERSION_KEY = "mcp-operator.dev/promptVersion"


def texts(result):
    out = []
    for message in result.messages:
        content = message.content
        text = getattr(content, "text", None)
        if text is None and getattr(content, "resource", None) is not None:
            text = content.resource.text
        out.append([message.role, text])
    return out


async def main() -> None:
    url, mode = sys.argv[1], sys.argv[2]
    transport = streamable_http_client(url, http_client=httpx2.AsyncClient(timeout=30))
    out = {}
    async with Client(transport, mode=mode) as client:
        out["protocolVersion"] = client.protocol_version
        listed = await client.list_prompts()
        out["prompts"] = {
            p.name: (p.meta or {}).get(VERSION_KEY) for p in listed.prompts
        }
        triage = await client.get_prompt("triage", {"service": "{{severity}} api", "severity": "high"})
        out["triage"] = texts(triage)
        out["triageMeta"] = triage.meta
        greet = await client.get_prompt("greet", {"name": "Ada"})
        out["greet"] = texts(greet)
        try:
            await client.get_prompt("triage", {})
            out["missing"] = "answered"
        except Exception as e:
            out["missing"] = str(e)
    print(json.dumps(out), flush=True)


asyncio.run(main())
