"""Asyncio service for tests/test_multi_service.py: many requests interleave in one loop.

``GET /work/{n}``: a ``step-a`` span around an ``await asyncio.sleep``, an instrumented
``httpx`` call to this same service's ``GET /echo`` (which answers with the Opik headers
it received), then a ``step-b`` span around another sleep. The sleeps make concurrent
requests' tasks interleave, so any linkage leaking between tasks would show.

Run: ``opentelemetry-instrument python flow_async_app.py`` (prints ``listening on port N``).
"""

import asyncio
import os
import sys

import httpx
from fastapi import FastAPI, Request
from opentelemetry import trace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flow_fastapi_agent import serve  # noqa: E402

app = FastAPI()
tracer = trace.get_tracer("flow-async")


@app.get("/work/{n}")
async def work(n: int, request: Request) -> dict:
    with tracer.start_as_current_span("step-a", attributes={"input.n": n}):
        await asyncio.sleep(0.02 + (n % 5) * 0.01)
    base = f"http://127.0.0.1:{request.url.port}"
    async with httpx.AsyncClient(timeout=10) as client:
        echoed = (await client.get(f"{base}/echo", params={"n": n})).json()
    with tracer.start_as_current_span("step-b", attributes={"input.n": n}):
        await asyncio.sleep(0.05 - (n % 5) * 0.01)
    return {"n": n, "echo": echoed}


@app.get("/echo")
async def echo(n: int, request: Request) -> dict:
    await asyncio.sleep(0.01)
    return {"n": n, "headers": {k.lower(): v for k, v in request.headers.items() if "opik" in k.lower()}}


if __name__ == "__main__":
    serve(app)
