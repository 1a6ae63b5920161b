"""A real OpenAI-compatible HTTP server on loopback, scripted per test.

Why a real server instead of mocking httpx: the same server serves both
``pygent.openai_compat`` and the official ``openai`` SDK, so tests compare
what actually went over the wire, and retries/timeouts/dropped connections
are exercised through real sockets.

    with FakeOpenAI() as srv:
        srv.queue(FakeOpenAI.status(429, headers={"Retry-After": "0"}),
                  FakeOpenAI.reply("hello"))
        ...  # point OPENAI_BASE_URL at srv.base_url
        srv.requests[0].body["messages"]
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class RecordedRequest:
    """One request the server received: path, headers (lower-case keys), parsed JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class _Status:
    code: int
    body: dict | list | str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Hang:
    seconds: float
    then: Any = None


@dataclass
class _Drop:
    pass


@dataclass
class _Garbage:
    text: str = "<html>this is not JSON</html>"


@dataclass
class _Raw:
    code: int
    data: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


_ids = itertools.count(1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        # As real servers do (uvicorn, llama.cpp): without it, the header and body writes of a
        # response meet delayed ACKs, and some clients (the openai SDK's) wait ~40 ms per call.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) makes our late write fail: expected, stay quiet.
        import sys

        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection pool is exercised
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        self.server.fake._handle(self)

    def do_GET(self) -> None:  # noqa: N802
        self.server.fake._handle(self)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class FakeOpenAI:
    """Scripted OpenAI-compatible server: ``queue()`` responses, read ``requests``."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.handler: Callable[[Any], Any] | None = None
        self._script: deque[Any] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.port: int = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="fake-openai", daemon=True)
        self._thread.start()

    # -- script ------------------------------------------------------------

    def queue(self, *responses: Any) -> FakeOpenAI:
        """Append responses, served in order; when empty, ``handler`` or a plain "ok" reply."""
        with self._lock:
            self._script.extend(responses)
        return self

    @staticmethod
    def reply(
        content: str | None = None,
        tool_calls: list[dict] | None = None,
        *,
        model: str = "fake-model",
        finish_reason: str | None = None,
        usage: dict | None = None,
    ) -> dict:
        """A full chat completion, with the extra fields real OpenAI sends (refusal, annotations, ...)."""
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {
            "id": f"chatcmpl-fake{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
                }
            ],
            "usage": usage or {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            "system_fingerprint": "fp_fake",
        }

    @staticmethod
    def tool_call(name: str, arguments: dict | str, id: str | None = None) -> dict:  # noqa: A002
        """A wire-format tool call for ``reply(tool_calls=[...])``."""
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        return {"id": id or f"call_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": args}}

    @staticmethod
    def status(code: int, body: dict | list | str | None = None, headers: dict[str, str] | None = None) -> _Status:
        """An HTTP error (or any status) with a JSON (dict/list) or text (str) body."""
        if body is None:
            body = {"error": {"message": f"fake error {code}", "type": "fake", "code": code}}
        return _Status(code, body, dict(headers or {}))

    @staticmethod
    def hang(seconds: float, then: Any = None) -> _Hang:
        """Sleep before answering (``then``, default "ok"), to trigger client timeouts."""
        return _Hang(seconds, then)

    @staticmethod
    def drop() -> _Drop:
        """Close the connection without sending any response."""
        return _Drop()

    @staticmethod
    def garbage(text: str = "<html>this is not JSON</html>") -> _Garbage:
        """A 200 whose body is not JSON."""
        return _Garbage(text)

    @staticmethod
    def raw(code: int, body: dict | list | str | bytes, content_type: str = "application/json", headers: dict[str, str] | None = None) -> _Raw:
        """Exactly this status, body and Content-Type (a dict/list body is sent as JSON), e.g. a provider's own shape."""
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        else:
            data = body.encode() if isinstance(body, str) else body
        return _Raw(code, data, content_type, dict(headers or {}))

    @staticmethod
    def html(code: int, title: str) -> _Raw:
        """An HTML error page as a reverse proxy or a web UI serves it (nginx-like)."""
        page = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        return FakeOpenAI.raw(code, page, "text/html")

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Stop serving, release hanging handlers, close open connections."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._server.conn_lock:
            conns = list(self._server.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving -----------------------------------------------------------

    def _next_response(self, body: Any) -> Any:
        with self._lock:
            if self._script:
                return self._script.popleft()
            handler = self.handler
        if handler is not None:
            return handler(body)
        return self.reply("ok")

    def _handle(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record = RecordedRequest(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}, body)
        with self._lock:
            self.requests.append(record)
        try:
            response = self._next_response(body)
        except Exception as exc:  # a broken test handler should fail loudly, not hang
            response = self.status(500, {"error": {"message": f"fake handler raised {exc!r}"}})
        self._respond(h, response)

    def _respond(self, h: _Handler, response: Any) -> None:
        if isinstance(response, _Hang):
            if self._stopping.wait(response.seconds):
                h.close_connection = True
                return
            response = response.then if response.then is not None else self.reply("ok")
        if isinstance(response, _Drop):
            h.close_connection = True
            return
        if isinstance(response, _Raw):
            self._send(h, response.code, response.data, response.content_type, response.headers)
        elif isinstance(response, _Garbage):
            self._send(h, 200, response.text.encode(), "text/html", {})
        elif isinstance(response, _Status):
            if isinstance(response.body, str):
                self._send(h, response.code, response.body.encode(), "text/plain", response.headers)
            else:
                self._send(h, response.code, json.dumps(response.body).encode(), "application/json", response.headers)
        elif isinstance(response, dict):
            self._send(h, 200, json.dumps(response).encode(), "application/json", {})
        else:
            raise TypeError(f"FakeOpenAI cannot send {type(response).__name__}")

    @staticmethod
    def _send(h: _Handler, code: int, data: bytes, ctype: str, headers: dict[str, str]) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()
