"""The seed's scenario through two Python agent frameworks' own MCP clients, each agent
driven by the framework's scripted test model (no LLM): pydantic-ai (``FunctionModel``,
its toolset ``MCPToolset`` over FastMCP's client) and the OpenAI Agents SDK (a ``Model``
that answers from a script, its ``MCPServerStdio`` / ``MCPServerStreamableHttp``).

Each tool call is one agent run: the scripted model asks for the tool, the framework calls
it through its MCP client, the model's next turn receives what the tool answered (or the
error text the framework feeds back) and ends the run with it.  The MCP connection stays
open across runs, so a session remembers what it read, as a host's would.

Usage: python frameworks.py FRAMEWORK CONFIG_JSON  (the config of scenario.mjs); prints one
JSON object, as scenario.mjs does.  Runs in its own virtual environment (build/interop).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

Call = Callable[[str, dict[str, Any]], Awaitable[tuple[bool, Any]]]


def _payload(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    if isinstance(raw, dict) and raw.get("type") in ("text", "input_text", "output_text"):
        return _payload(raw.get("text"))
    return raw


# ------------------------------------------------------------------ pydantic-ai


async def pydantic_ai_agent(stack: AsyncExitStack, spec: dict[str, Any], config: dict[str, Any]) -> Call:
    from fastmcp.client import Client
    from fastmcp.client.transports import StdioTransport, StreamableHttpTransport
    from pydantic_ai import Agent
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, RetryPromptPart, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    if config["transport"] == "stdio":
        transport: Any = StdioTransport(spec["command"], spec["args"], env=spec["env"], cwd=spec["cwd"])
    else:
        transport = StreamableHttpTransport(config["url"], headers={"Authorization": f"Bearer {spec['token']}"})
    toolset = MCPToolset(Client(transport), tool_error_behavior="retry", max_retries=1)
    plan: dict[str, Any] = {}

    def script(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        if isinstance(last, ModelRequest):
            for part in last.parts:
                if isinstance(part, ToolReturnPart):
                    # A tool error comes back as its text (every comity answer is a JSON object).
                    answer = _payload(part.content)
                    return ModelResponse(parts=[TextPart(json.dumps({"error": not isinstance(answer, dict), "answer": answer}))])
                if isinstance(part, RetryPromptPart):
                    text = part.content if isinstance(part.content, str) else json.dumps(part.content, default=str)
                    return ModelResponse(parts=[TextPart(json.dumps({"error": True, "answer": text}))])
        assert plan["tool"] in {t.name for t in info.function_tools}, (plan["tool"], [t.name for t in info.function_tools])
        return ModelResponse(parts=[ToolCallPart(plan["tool"], plan["args"])])

    agent = Agent(FunctionModel(script), toolsets=[toolset])
    await stack.enter_async_context(agent)  # keeps the MCP connection open across runs

    async def call(tool: str, args: dict[str, Any]) -> tuple[bool, Any]:
        plan.update(tool=tool, args=args)
        result = await agent.run(f"call {tool}")
        out = json.loads(result.output)
        return out["error"], out["answer"]

    return call


# ------------------------------------------------------------------ OpenAI Agents SDK


async def openai_agents_agent(stack: AsyncExitStack, spec: dict[str, Any], config: dict[str, Any]) -> Call:
    from agents import Agent, Runner, set_tracing_disabled
    from agents.items import ModelResponse
    from agents.mcp import MCPServerStdio, MCPServerStreamableHttp
    from agents.models.interface import Model
    from agents.usage import Usage
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    set_tracing_disabled(True)  # nothing leaves the machine
    if config["transport"] == "stdio":
        server: Any = MCPServerStdio({"command": spec["command"], "args": spec["args"], "env": spec["env"], "cwd": spec["cwd"]},
                                     use_structured_content=True, client_session_timeout_seconds=60)  # fmt: skip
    else:
        server = MCPServerStreamableHttp({"url": config["url"], "headers": {"Authorization": f"Bearer {spec['token']}"}},
                                         use_structured_content=True, client_session_timeout_seconds=60)  # fmt: skip
    await stack.enter_async_context(server)
    plan: dict[str, Any] = {}

    def said(text: str) -> ModelResponse:
        msg = ResponseOutputMessage(id="msg_1", type="message", role="assistant", status="completed",
                                    content=[ResponseOutputText(type="output_text", text=text, annotations=[])])  # fmt: skip
        return ModelResponse(output=[msg], usage=Usage(), response_id=None)

    class Scripted(Model):
        """Asks for the planned tool, then ends the run with what the tool answered."""

        async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any, *a: Any, **kw: Any) -> ModelResponse:
            items = input if isinstance(input, list) else []
            outputs = [i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"]
            if outputs:
                raw = outputs[-1].get("output")
                payload = _payload(raw if not isinstance(raw, list) else raw[0])
                # A tool error comes back as its text (every comity answer is a JSON object).
                return said(json.dumps({"error": not isinstance(payload, dict), "answer": payload}))
            assert plan["tool"] in {t.name for t in tools}, plan["tool"]
            call = ResponseFunctionToolCall(id="fc_1", call_id=f"call_{plan['n']}", type="function_call", name=plan["tool"],
                                            arguments=json.dumps(plan["args"]))  # fmt: skip
            return ModelResponse(output=[call], usage=Usage(), response_id=None)

        def stream_response(self, *a: Any, **kw: Any) -> Any:
            raise NotImplementedError("the scenario runs without streaming")

    agent = Agent(name="comity-agent", instructions="coordinate", model=Scripted(), mcp_servers=[server])

    async def call(tool: str, args: dict[str, Any]) -> tuple[bool, Any]:
        plan.update(tool=tool, args=args, n=plan.get("n", 0) + 1)
        result = await Runner.run(agent, f"call {tool}")
        out = json.loads(result.final_output)
        return out["error"], out["answer"]

    return call


# ------------------------------------------------------------------ the scenario


async def scenario(framework: str, config: dict[str, Any]) -> dict[str, Any]:
    make = {"pydantic-ai": pydantic_ai_agent, "openai-agents": openai_agents_agent}[framework]
    out: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        alice = await make(stack, config["agents"]["alice"], config)
        bob = await make(stack, config["agents"]["bob"], config)

        def extra(name: str) -> dict[str, Any]:
            w = config["agents"][name].get("worktree")
            return {"worktree": w} if w else {}

        async def ok(c: Call, tool: str, args: dict[str, Any]) -> Any:
            error, answer = await c(tool, args)
            assert not error, (tool, answer)
            return answer

        out["whoami"] = {"alice": await ok(alice, "whoami", {}), "bob": await ok(bob, "whoami", {})}
        ma, mb = await asyncio.gather(
            ok(alice, "migration_new", {"slug": "add_users", "dir": "db/migrations", **extra("alice")}),
            ok(bob, "migration_new", {"slug": "add_orders", "dir": "db/migrations", **extra("bob")}),
        )
        out["migrations"] = {"alice": ma, "bob": mb}
        await ok(alice, "write", {"key": "notes/schema", "value": "users: id, email"})
        await ok(bob, "read", {"key": "notes/schema"})
        await ok(alice, "read", {"key": "notes/schema"})
        await ok(alice, "write", {"key": "notes/schema", "value": "users: id, email, name"})
        error, text = await bob("write", {"key": "notes/schema", "value": "users: id, email, created_at"})
        out["stale"] = {"isError": error, "text": text if isinstance(text, str) else json.dumps(text)}
        out["reread"] = await ok(bob, "read", {"key": "notes/schema"})
        out["redone"] = await ok(bob, "write", {"key": "notes/schema", "value": "users: id, email, name, created_at"})
        task = await ok(alice, "task_add", {"title": "Add the users table"})
        await ok(alice, "task_ready", {})
        await ok(bob, "task_ready", {})
        (ea, ca), (eb, cb) = await asyncio.gather(alice("task_claim", {"id": task["id"]}), bob("task_claim", {"id": task["id"]}))
        out["task"] = task["id"]
        out["claims"] = {n: {"isError": e, "text": c if isinstance(c, str) else json.dumps(c)} for n, e, c in (("alice", ea, ca), ("bob", eb, cb))}
    return out


if __name__ == "__main__":
    result = asyncio.run(scenario(sys.argv[1], json.loads(sys.argv[2])))
    sys.stdout.write(json.dumps(result) + "\n")
