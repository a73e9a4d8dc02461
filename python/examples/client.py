import asyncio, agentsocket

async def main():
    async def answer(question):  # the server may ask the client (SPEC §8)
        return "yes"
    async with await agentsocket.connect("127.0.0.1:7777", on_request=answer) as client:
        call = client.invoke("agent", {"prompt": "hello?"})  # client.tools lists what is offered
        async for chunk in call:
            print(chunk, end="")
        print("\n", await call.result())  # Result(status='ok', value={'tokens': 3}, metrics=…)

asyncio.run(main())
