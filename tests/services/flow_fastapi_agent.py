"""Middle service for tests/test_multi_service.py: a plain FastAPI app on uvicorn.

``POST /ask`` runs a ``plan`` span and calls ``GET {TOOL_URL}/lookup`` through
``httpx.AsyncClient`` (instrumented by ``opentelemetry-instrument``); no tracing code
beyond the one span. uvicorn keeps header names with underscores, so it sees both
spellings of the Opik headers when a caller sends both.

Run: ``opentelemetry-instrument python flow_fastapi_agent.py`` (prints ``listening on port N``).
"""

import os
import socket

import httpx
import uvicorn
from fastapi import FastAPI, Request
from opentelemetry import trace

app = FastAPI()
tracer = trace.get_tracer("flow-agent")


@app.post("/ask")
async def ask(request: Request) -> dict:
    question = (await request.json())["question"]
    with tracer.start_as_current_span("plan", attributes={"input.question": question}):
        pass
    async with httpx.AsyncClient(timeout=10) as client:
        found = await client.get(f"{os.environ['TOOL_URL']}/lookup", params={"q": question})
    found.raise_for_status()
    seen = sorted(name.lower() for name in request.headers.keys() if "opik" in name.lower())
    return {"answer": found.json()["result"], "seen": seen, "baggage": request.headers.get("baggage")}


def serve(application) -> None:  # type: ignore[no-untyped-def]
    """Serve on a loopback port chosen by the OS; SIGINT shuts uvicorn down cleanly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(f"listening on port {sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning", lifespan="off"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it shut down on
        pass


if __name__ == "__main__":
    serve(app)
