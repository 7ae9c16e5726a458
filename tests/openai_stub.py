"""A local OpenAI-compatible HTTP server with recorded answers, for tests that use the real ``openai`` client.

``OpenAIStub`` listens on 127.0.0.1 (a free port) in a background thread and answers
``POST /v1/chat/completions`` with the answers a test queued, in order, and ``GET /v1/models`` with
``stub.models``. Every request is recorded (method, path, headers, parsed JSON body) so a test can
check what the client sent: the bearer key, the image parts, ``response_format``.

Queue answers with:

* ``reply(content)``: a normal chat completion whose message content is ``content`` (any string:
  JSON, prose, garbage); ``reply_json(obj)`` dumps ``obj`` first;
* ``error(status, message)``: an OpenAI-style error body with that HTTP status;
* ``raw(body, status=200, content_type=...)``: any bytes (a malformed JSON body, an HTML page);
* ``delay(seconds)``: the next answer is sent only after ``seconds`` (beyond a client's timeout,
  so the client gives up first).

With nothing queued the stub answers HTTP 500 "no recorded answer queued", so a test that makes
more requests than it planned fails loudly. The ``openai_stub`` pytest fixture starts one per test
(``tests/conftest.py`` lists this module in ``pytest_plugins``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict           # header names lower-cased
    raw_body: bytes
    json: object = None     # the parsed body, or None when it was not JSON

    @property
    def bearer(self) -> str | None:
        value = self.headers.get("authorization", "")
        return value[len("Bearer "):] if value.startswith("Bearer ") else None

    def image_urls(self) -> list[str]:
        """Every ``image_url`` part's URL in the request's messages, in order."""
        urls = []
        for message in (self.json or {}).get("messages", []):
            content = message.get("content")
            if isinstance(content, list):
                urls += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
        return urls

    def text(self) -> str:
        """All text of the request's messages, joined (for checking what the prompt said)."""
        chunks = []
        for message in (self.json or {}).get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                chunks.append(content)
            elif isinstance(content, list):
                chunks += [p.get("text", "") for p in content if p.get("type") == "text"]
        return "\n".join(chunks)


class OpenAIStub:
    def __init__(self, host: str = "127.0.0.1"):
        self.models = ["stub-vlm"]
        self.requests: list[RecordedRequest] = []
        self._answers: deque[Answer] = deque()
        self._pending_delay = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a handler still sleeping in a delay must not block stop()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path == CHAT_PATH]

    # ---- queueing answers --------------------------------------------------------------------------

    def delay(self, seconds: float) -> "OpenAIStub":
        """Hold the next queued answer back for ``seconds``."""
        self._pending_delay = float(seconds)
        return self

    def _queue(self, answer: Answer) -> "OpenAIStub":
        answer.delay, self._pending_delay = self._pending_delay, 0.0
        with self._lock:
            self._answers.append(answer)
        return self

    def reply(self, content: str | None, *, finish_reason: str = "stop", model: str | None = None,
              refusal: str | None = None) -> "OpenAIStub":
        message = {"role": "assistant", "content": content}
        if refusal is not None:
            message["refusal"] = refusal
        body = {
            "id": f"chatcmpl-stub-{len(self._answers)}", "object": "chat.completion", "created": int(time.time()),
            "model": model or "{request_model}",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        return self._queue(Answer(body=json.dumps(body).encode()))

    def reply_json(self, obj) -> "OpenAIStub":
        return self.reply(json.dumps(obj))

    def error(self, status: int, message: str = "stub error", *, headers: dict | None = None,
              error_type: str = "server_error") -> "OpenAIStub":
        body = {"error": {"message": message, "type": error_type, "param": None, "code": None}}
        return self._queue(Answer(status=status, body=json.dumps(body).encode(), headers=dict(headers or {})))

    def raw(self, body: bytes | str, status: int = 200, content_type: str = "application/json") -> "OpenAIStub":
        data = body.encode() if isinstance(body, str) else bytes(body)
        return self._queue(Answer(status=status, body=data, content_type=content_type))

    @property
    def pending(self) -> int:
        """Answers queued and not yet sent."""
        with self._lock:
            return len(self._answers)

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> "OpenAIStub":
        # A short poll interval: stop() waits for the serving loop to notice, once per test.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a delay
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "OpenAIStub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- serving -----------------------------------------------------------------------------------

    def _next_answer(self, request: RecordedRequest) -> Answer:
        if request.method == "GET" and request.path == MODELS_PATH:
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in self.models]
            return Answer(body=json.dumps({"object": "list", "data": data}).encode())
        if request.method != "POST" or request.path != CHAT_PATH:
            return Answer(status=404, body=json.dumps(
                {"error": {"message": f"no route {request.method} {request.path}", "type": "not_found"}}).encode())
        with self._lock:
            answer = self._answers.popleft() if self._answers else None
        if answer is None:
            return Answer(status=500, body=json.dumps(
                {"error": {"message": "openai_stub: no recorded answer queued", "type": "stub"}}).encode())
        model = (request.json or {}).get("model", "") if isinstance(request.json, dict) else ""
        answer.body = answer.body.replace(b"{request_model}", json.dumps(model)[1:-1].encode())
        return answer


def _handler_for(stub: OpenAIStub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # keep pytest output clean
            pass

        def _record(self, method: str) -> RecordedRequest:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            request = RecordedRequest(method, self.path.split("?")[0], {k.lower(): v for k, v in self.headers.items()},
                                      raw, parsed)
            stub.requests.append(request)
            return request

        def _answer(self, method: str) -> None:
            answer = stub._next_answer(self._record(method))
            if answer.delay and stub._stopping.wait(answer.delay):
                return
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) before the answer came

        def do_POST(self):
            self._answer("POST")

        def do_GET(self):
            self._answer("GET")

    return Handler


@pytest.fixture
def openai_stub():
    """A running ``OpenAIStub`` (stopped after the test)."""
    with OpenAIStub() as stub:
        yield stub
