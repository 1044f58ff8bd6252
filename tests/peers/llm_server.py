"""The OpenAI-compatible server of the end-to-end tests.

llama-cpp-python's own server app, unchanged, serving a GGUF file on
127.0.0.1, with one ASGI layer in front that appends the body of every
request it receives to a JSON-lines file: the tests read there what really
reached the server (redaction is checked on that, not on what the host
says it sent).

usage: python llm_server.py <model.gguf> <port> <record.jsonl> <alias>
"""

import json
import sys

import uvicorn
from llama_cpp.server.app import create_app
from llama_cpp.server.settings import ModelSettings, ServerSettings


class Recorder:
    """Records each HTTP request's path and body, then passes it on."""

    def __init__(self, app, path):
        self.app = app
        self.path = path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received = []
        body = b""
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with open(self.path, "a", encoding="utf-8") as record:
            entry = {"path": scope["path"], "body": body.decode("utf-8", "replace")}
            record.write(json.dumps(entry) + "\n")

        async def replay():
            if received:
                return received.pop(0)
            return await receive()

        return await self.app(scope, replay, send)


def main():
    model, port, record, alias = sys.argv[1:5]
    server = ServerSettings(host="127.0.0.1", port=int(port))
    settings = ModelSettings(
        model=model, model_alias=alias, n_ctx=4096, n_threads=2, n_threads_batch=2, verbose=False
    )
    app = create_app(server_settings=server, model_settings=[settings])
    uvicorn.run(Recorder(app, record), host="127.0.0.1", port=int(port), log_level="warning")


if __name__ == "__main__":
    main()
