import asyncio
import agentsocket

server = agentsocket.Server()

@server.tool
async def agent(ctx: agentsocket.Context, prompt: str, repeat: int = 1) -> dict:
    """A stand-in for an LLM: streams its answer one word at a time."""
    words = f"You asked: {prompt}".split() * repeat
    for w in words:
        await ctx.stream(w + " ")
    if "?" in prompt:
        ok = await ctx.ask({"question": "Shall I go on?"})
        await ctx.stream(f"(you said {ok})")
    return {"tokens": len(words)}

asyncio.run(server.serve("127.0.0.1", 7777))
