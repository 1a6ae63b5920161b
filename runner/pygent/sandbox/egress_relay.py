"""Inside an allowlisted sandbox: 127.0.0.1:PORT -> the egress proxy's unix socket.

Why a relay: the sandbox has no network stack at all (nothing but loopback:
no route, no gateway, no resolver, no other container), yet HTTP_PROXY must be
a TCP address. This relay is the sandbox's only way out, and it leads to the
proxy alone, which checks every request. It also holds one `PYGENT-HOLD`
connection to the proxy for as long as the sandbox lives, so the shared proxy
knows it is in use.

Run as the container's command: `python3 -I -S -c <this file> CONFIG CMD...`.
It binds the port first (so it listens before the command server says hello),
forks the relay into the background, and execs CMD (the command server) in
its own place. CONFIG is JSON: {"socket": path, "port": n}. Stdlib only.
"""

import asyncio
import json
import os
import socket
import sys


async def _copy(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass


async def _relay(path, reader, writer):
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(path)
    except OSError:
        body = b"pygent egress relay: the egress proxy is not reachable (it stopped?); start a new sandbox\n"
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        writer.close()
        return
    try:
        await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
    finally:
        up_writer.close()
        writer.close()


async def _hold(path):
    """Keep one connection open to the proxy while we live (it lingers, then exits, without any)."""
    while True:
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"PYGENT-HOLD\r\n\r\n")
            await writer.drain()
            await reader.read()
        except OSError:
            pass
        await asyncio.sleep(0.5)


async def _serve(listener, path):
    server = await asyncio.start_server(lambda r, w: _relay(path, r, w), sock=listener)
    async with server:
        await asyncio.gather(_hold(path), server.serve_forever())


def main(argv):
    config = json.loads(argv[0])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(config["port"])))
    listener.listen(64)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:  # reparented to init: the command server never sees it as a child
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            try:
                asyncio.run(_serve(listener, config["socket"]))
            finally:
                os._exit(0)
        os._exit(0)
    os.wait()
    listener.close()
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
