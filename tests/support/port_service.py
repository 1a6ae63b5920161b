"""A small HTTP/1.1 service the port tests and `make bench` run inside a sandbox (stdlib only).

Routes: /small (2 bytes), /bytes/N (N bytes, streamed in 64 KiB writes),
/forever (bytes until the client goes), /ws (a WebSocket echo after the upgrade).
"""

import base64
import hashlib
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCK = bytes(range(256)) * 256  # 64 KiB, a known pattern


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: without it, 40 ms delayed-ACK stalls

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/small":
            self._answer(b"ok")
        elif self.path.startswith("/bytes/"):
            n = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n > 0:
                part = BLOCK[: min(n, len(BLOCK))]
                self.wfile.write(part)
                n -= len(part)
        elif self.path == "/forever":
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(BLOCK)
            except OSError:
                return
        elif self.path == "/ws":
            self._websocket()
        else:
            self.send_error(404)

    def _answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, size = head[0] & 0x0F, head[1] & 0x7F
            if size == 126:
                size = struct.unpack(">H", self.rfile.read(2))[0]
            mask = self.rfile.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                return
            self.wfile.write(bytes([0x80 | opcode, len(data)]) + data)
            self.wfile.flush()


ThreadingHTTPServer.daemon_threads = True
# argv: PORT [ADDRESS]: loopback unless told (docker run -p reaches the container's own address)
ThreadingHTTPServer((sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
