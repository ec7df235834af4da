"""Benchmark: CPU per request of the HTTP server layer alone, uvicorn (ASGI) against a bare httptools protocol.

    python loadtests/bench_http_front.py [--rps 500] [--seconds 10] [--rounds 2]

Both servers answer every POST with the same fixed 21-byte JSON body, so what differs is only
the HTTP layer: uvicorn with httptools and uvloop (what `modelramp router` ran on before it had
its own server) and a hand-written asyncio protocol on the same httptools parser that writes
the answer in one call. The same open-loop load (aiohttp, one new request every 1/rps s) drives
each in alternating rounds; CPU is read from the server process. The difference is the most a
custom HTTP front could save per request: the measurement behind `router/rest/server.py`, the
router's own server on that parser, which answers predict without ASGI.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

BODY = b'{"predictions":[1.0]}'

SERVER = r'''
import asyncio, sys, httptools, uvicorn, uvloop
BODY = %r

async def asgi_app(scope, receive, send):
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%%d" %% len(BODY))]})
    await send({"type": "http.response.body", "body": BODY})

class Bare(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.parser = transport, httptools.HttpRequestParser(self)
    def data_received(self, data):
        self.parser.feed_data(data)
    def on_message_complete(self):
        asyncio.get_running_loop().create_task(self.answer())  # a task, as a real handler awaits a backend
    async def answer(self):
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %%d\r\n\r\n%%s" %% (len(BODY), BODY))

async def main(kind, port):
    if kind == "uvicorn":
        await uvicorn.Server(uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                            lifespan="off", loop="none", http="httptools", server_header=False,
                                            date_header=False)).serve()
    else:
        server = await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", port)
        await server.serve_forever()

uvloop.run(main(sys.argv[1], int(sys.argv[2])))
''' % BODY  # noqa: UP031 - the template is Python source full of braces


async def cpu_per_request(url: str, pid: int, rps: float, seconds: float) -> tuple[float, float]:
    """(CPU microseconds per request, of which user) of process `pid` under an open-loop load."""
    import aiohttp  # noqa: PLC0415 - the load generator, only in the parent process
    import psutil  # noqa: PLC0415

    proc = psutil.Process(pid)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:
        async def one() -> None:
            async with session.post(url, data=b'{"instances":[{"x":1}]}', headers={"Content-Type": "application/json"}) as r:
                await r.read()

        for _ in range(200):  # warm up
            await one()
        before, start, tasks = proc.cpu_times(), time.perf_counter(), []
        n = int(rps * seconds)
        for i in range(n):
            delay = start + i / rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        after = proc.cpu_times()
    user = (after.user - before.user) / n * 1e6
    return user + (after.system - before.system) / n * 1e6, user


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rps", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="per round and server (default 10)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.processes import free_port, wait_until  # noqa: PLC0415 - after the checkout is on sys.path

    results: dict[str, list[tuple[float, float]]] = {"uvicorn": [], "bare": []}
    for _ in range(args.rounds):
        for kind in results:
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-c", SERVER, kind, str(port)])
            try:
                def listening(port: int = port) -> bool:
                    with socket.socket() as s:
                        return s.connect_ex(("127.0.0.1", port)) == 0

                wait_until(listening, 30, f"{kind} server listening", proc)
                results[kind].append(asyncio.run(cpu_per_request(f"http://127.0.0.1:{port}/", proc.pid, args.rps, args.seconds)))
            finally:
                proc.terminate()
                proc.wait(10)
    for kind, runs in results.items():
        total = sum(r[0] for r in runs) / len(runs)
        user = sum(r[1] for r in runs) / len(runs)
        print(f"{kind:8s} {total:6.0f} us CPU per request (user {user:.0f}) at {args.rps:g} req/s")
    saved = sum(r[0] for r in results["uvicorn"]) / args.rounds - sum(r[0] for r in results["bare"]) / args.rounds
    print(f"uvicorn's layer costs {saved:.0f} us per request more than a bare httptools protocol")
    return 0


if __name__ == "__main__":
    sys.exit(main())
