"""The tool service: another plain Flask app, linked with no code change."""

import os

from flask import Flask, request
from opentelemetry import trace

app = Flask(__name__)
tracer = trace.get_tracer("tool")


@app.get("/lookup")
def lookup():  # type: ignore[no-untyped-def]
    with tracer.start_as_current_span("search-index", attributes={"input.query": request.args["q"]}) as span:
        result = "Opik is an open-source LLM observability platform."
        span.set_attribute("output.result", result)
    return {"result": result}


if __name__ == "__main__":
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(os.environ.get("PORT", "0")), app, threaded=True)
    print(f"listening on port {server.server_port}", flush=True)
    server.serve_forever()
