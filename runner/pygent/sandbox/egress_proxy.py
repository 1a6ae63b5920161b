"""Both ends of the egress path: the proxy (HTTP, and HTTPS by CONNECT, to allowed names only)
and the relay inside each allowlisted sandbox that leads to it. One file because
both run as `python3 -I -S -c <this file> ...` in containers (stdlib only: the
image has nothing else) and share the byte pumps.

The proxy (`serve CONFIG`) runs in the bundled python image, hardened like a
sandbox, listening on a unix socket in a volume the sandboxes mount read-only.
Sandboxes have no network stack at all: their relay is their only way to this
socket, and the proxy is the only one that resolves names.

The relay (`relay CONFIG CMD...`) is a sandbox's command: why a relay? The
sandbox has nothing but loopback (no route, no gateway, no resolver, no other
container), yet HTTP_PROXY must be a TCP address: the relay listens on
127.0.0.1:PORT and forwards each connection to the proxy's socket. It binds the
port first (so it listens before the command server says hello), forks itself
into the background and execs CMD (the command server) in its own place.

Why a check after resolution: an allowed name may point at a private,
loopback, link-local or metadata address (DNS rebinding, or a name an attacker
controls). We resolve once, refuse any such address unless its range is
listed, and connect to the address we checked (never resolving twice).
Raw IP targets are always refused: the allowlist is about names.

Refusals (issue 25): a refused host's 403 carries X-Pygent-Refused (JSON: host,
port, reason, the allowlist). The relay, which sees every answer, writes that record
with the time on a pipe to the command server before the client reads the 403; the
server puts the refusals made while a command ran in its Done report, and the model
reads one line per host (agent/format.py). A sandbox without an allowlist has no relay.

Lifetime: each sandbox's relay holds one `PYGENT-HOLD` connection open while
the sandbox lives; with no holder, no request for `linger` seconds and no claim
the proxy exits, and the engine's auto-remove deletes the container. A claim is a
sandbox on its way: the host that starts the proxy holds one, and a host that finds
it running sends SIGUSR1 before it starts a sandbox on it (so a proxy in its last
idle moment does not exit under that sandbox's start). A holder's arrival settles
every claim (the sandboxes on their way hold the proxy before they answer their host,
and a holder keeps it up); an unsettled claim expires after CLAIM_GRACE seconds. We do not
intercept TLS: after CONNECT the bytes pass through untouched.

Per-sandbox rules and bounds (issue 25): one proxy serves every sandbox with the same
starting allowlist, yet each may change its own (Sandbox.allow_hosts / deny_hosts) and
none may starve the others. So every connection from a relay starts with a line
`PYGENT-ID <ticket>`: the ticket is the sandbox's rules (its id, a sequence number, its
allowlist or null for the proxy's own, its denials, its connection and bandwidth bounds)
signed with the proxy's secret (HMAC), which only the host knows (it is in the proxy's
config, never in a sandbox). A sandbox can therefore present its own ticket only, never
forge one or another sandbox's; the proxy keeps each sandbox's rules of the highest
sequence it has seen, so replaying an older ticket changes nothing. A change arrives as
a newer ticket on a `PYGENT-RULES` connection, which the proxy answers with a proof of
what it applied (an HMAC again: a sandbox in the middle cannot fake the answer), and it
cuts that sandbox's open connections to hosts no longer allowed. Bounds: at most
`conns` connections at once per sandbox (a 429 beyond), and `rate` bytes a second per
sandbox over all its connections and both directions (a token bucket). A connection
without a valid ticket is answered 403.

The proxy's CONFIG is JSON: {"socket": path, "allow": [entries], "linger": seconds, "secret": hex};
the relay's arguments are `relay PORT SOCKET TICKET CMD...`.
"""

from __future__ import annotations

import os
import sys


def _imports() -> None:
    """The modules both ends need. The relay imports them only once forked off: asyncio and
    ipaddress alone cost ~45 ms, which would otherwise delay every allowlisted sandbox's start."""
    global asyncio, base64, hashlib, hmac, ipaddress, json, socket, time
    import asyncio
    import base64
    import hashlib
    import hmac
    import ipaddress
    import json
    import socket
    import time


if not (__name__ == "__main__" and sys.argv[1:2] == ["relay"]):
    _imports()

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0
#: How long a claim (a sandbox starting on this proxy, whose holder has not arrived) keeps it up.
CLAIM_GRACE = 60.0
CONNECT_TIMEOUT = 10.0
DEFAULT_PORTS = (80, 443)
#: A refusal's record names at most this many allowlist entries (the note stays one line).
ALLOWED_SHOWN = 8
#: The header of a 403 that says which host was refused and why (JSON), for the relay.
REFUSED_HEADER = b"X-Pygent-Refused"
#: The variable that tells the command server (which the relay execs) the fd of the refusals' pipe.
NOTES_ENV = "PYGENT_EGRESS_NOTES_FD"
#: The relay's records must stay below PIPE_BUF (4096) so each write is whole.
RECORD_MAX = 3000
#: The first line of every connection a relay makes: `PYGENT-ID <ticket>` (who asks, under which rules).
ID_PREFIX = b"PYGENT-ID "
#: A sandbox's bounds when its ticket names none (SandboxPolicy documents them: egress_connections, egress_bandwidth).
DEFAULT_CONNS = 32
DEFAULT_RATE = 32 << 20
#: Connections that have not said who they are yet, over every sandbox (beyond: closed at once).
MAX_ANONYMOUS = 256
ID_TIMEOUT = 5.0
#: Hop-by-hop headers we drop from forwarded plain-HTTP requests.
_HOP = {b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive"}


class Denied(Exception):
    """A request we refuse; the message is the 403 body's first line.

    A refusal of a host (reason "not_allowed", "private", "raw_ip" or "unresolvable")
    also carries what the sandbox's relay records for the command that asked
    (`refusal`, sent as the X-Pygent-Refused header), so the model is told plainly.
    """

    def __init__(self, message: str, host: str | None = None, port: int = 0, reason: str = "", **more: object) -> None:
        super().__init__(message)
        self.refusal = {"host": host[:253], "port": port, "reason": reason, **more} if host else None


class Allowlist:
    """Host patterns ('a.b', '*.b', each with an optional ':port') and address ranges."""

    def __init__(self, entries: list[str]) -> None:
        self.entries = list(entries)
        self.hosts: list[tuple[str, int | None]] = []
        self.ranges: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            if "/" in entry:
                self.ranges.append(ipaddress.ip_network(entry, strict=False))
                continue
            host, _, port = entry.partition(":")
            self.hosts.append((host, int(port) if port else None))

    def allows_name(self, host: str, port: int, any_port: bool = False) -> bool:
        """Does a host pattern match? One without a port matches 80 and 443 (any port with any_port: a denial)."""
        for pattern, allowed_port in self.hosts:
            if allowed_port is None and port not in DEFAULT_PORTS and not any_port or allowed_port not in (None, port):
                continue
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]):
                    return True
            elif host == pattern:
                return True
        return False

    def allows_address(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Public addresses always; others (private, loopback, link-local, ...) only in a listed range."""
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if addr.is_global and not addr.is_multicast:
            return True
        return any(addr.version == r.version and addr in r for r in self.ranges)


def sign(secret: str, data: bytes) -> str:
    return hmac.new(bytes.fromhex(secret), data, hashlib.sha256).hexdigest()[:32]


def make_ticket(secret: str, rules: dict) -> str:
    """A sandbox's rules, signed: what its relay presents on every connection (the host makes them)."""
    payload = base64.urlsafe_b64encode(json.dumps(rules, separators=(",", ":")).encode()).decode()
    return f"{payload}.{sign(secret, payload.encode())}"


def open_ticket(secret: str, ticket: str) -> dict | None:
    """The rules of a ticket we signed, or None (forged, altered, malformed)."""
    payload, _, mac = ticket.strip().partition(".")
    if not hmac.compare_digest(sign(secret, payload.encode()), mac):
        return None
    try:
        rules = json.loads(base64.urlsafe_b64decode(payload))
    except ValueError:
        return None
    return rules if isinstance(rules, dict) and isinstance(rules.get("id"), str) else None


def applied_proof(secret: str, box: str, seq: int) -> str:
    """The proxy's answer to a change: only the proxy (and the host) can make it."""
    return sign(secret, f"applied {box} {seq}".encode())


class Box:
    """One sandbox as the proxy sees it: its rules (the newest ticket's) and what it uses now."""

    def __init__(self, rules: dict, base: Allowlist) -> None:
        self.id = str(rules["id"])
        self.seq = -1
        #: its connections now: key -> (host, port, the relay side's writer); host None while the head is read
        self.active: dict[int, tuple[str | None, int, asyncio.StreamWriter]] = {}
        self.tokens = 0.0
        self.stamp = time.monotonic()
        self.update(rules, base)

    def update(self, rules: dict, base: Allowlist) -> None:
        self.seq = int(rules.get("seq", 0))
        allow = rules.get("allow")
        self.allow = base if allow is None else Allowlist([str(e) for e in allow])
        self.deny = Allowlist([str(e) for e in rules.get("deny") or []])
        self.conns = max(1, int(rules.get("conns", DEFAULT_CONNS)))
        self.rate = max(1024, int(rules.get("rate", DEFAULT_RATE)))
        self.burst = max(self.rate / 4, 65536.0)
        self.tokens = min(self.tokens, self.burst)

    def allows_name(self, host: str, port: int) -> bool:
        return self.allow.allows_name(host, port) and not self.deny.allows_name(host, port, any_port=True)

    def allows_address(self, addr: "ipaddress.IPv4Address | ipaddress.IPv6Address") -> bool:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        denied = any(addr.version == r.version and addr in r for r in self.deny.ranges)
        return not denied and self.allow.allows_address(addr)

    async def spend(self, n: int) -> None:
        """Wait until `n` more bytes fit this sandbox's bandwidth: by any time t it has moved at most burst + rate*t."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)

    def cut(self) -> None:
        """Close the connections to hosts the rules no longer allow (a denial applies to open tunnels too)."""
        for host, port, writer in list(self.active.values()):
            if host is not None and not self.allows_name(host, port):
                writer.close()


def how_to_allow(host: str, port: int) -> str:
    spec = host if port in DEFAULT_PORTS else f"{host}:{port}"
    return (
        f"Allow it with --allow-host {spec}, PYGENT_ALLOW_HOSTS or SandboxPolicy(network=[{spec!r}]); "
        "an allowed name that resolves to a private address also needs its range, e.g. 10.0.0.0/8."
    )


def split_host_port(authority: str, default: int) -> tuple[str, int]:
    """'h', 'h:p', '[v6]:p' -> (host lowercased without a trailing dot, port). Raises Denied."""
    text = authority.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else default
    except ValueError:
        raise Denied(f"bad port in {authority!r}") from None
    if not 0 < port < 65536:
        raise Denied(f"bad port in {authority!r}")
    return host.lower().rstrip("."), port


class Proxy:
    def __init__(self, allow: Allowlist, linger: float, secret: str) -> None:
        self.allow = allow
        self.linger = linger
        self.secret = secret
        self.holders = 0
        self.active = 0
        self.anonymous = 0
        #: every sandbox seen, by its ticket's id; kept while we live, so an old ticket never resets a change
        self.boxes: dict[str, Box] = {}
        self.last_use = time.monotonic()
        #: expiry times of the claims not yet settled by a holder; the starter's is the first
        self.claims = [self.last_use + CLAIM_GRACE]

    def claim(self) -> None:
        """A host is about to start a sandbox on us (SIGUSR1): stay up until its holder arrives."""
        self.claims.append(time.monotonic() + CLAIM_GRACE)

    def identify(self, line: bytes) -> Box | None:
        """The sandbox a connection's first line names (its rules updated to a newer ticket), or None."""
        if not line.startswith(ID_PREFIX):
            return None
        rules = open_ticket(self.secret, line[len(ID_PREFIX):].decode("ascii", "replace"))
        if rules is None:
            return None
        box = self.boxes.get(rules["id"])
        if box is None:
            box = self.boxes[rules["id"]] = Box(rules, self.allow)
        elif int(rules.get("seq", 0)) > box.seq:
            box.update(rules, self.allow)
            box.cut()
        return box

    async def check(self, host: str, port: int, box: Box) -> tuple[str, int]:
        """The address to connect to for host:port. Raises Denied with the reason."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            raise Denied(f"pygent egress proxy: {host!r} is a raw IP address; only allowed host names are reachable",
                         host, port, "raw_ip")
        if not box.allows_name(host, port):
            raise Denied(f"pygent egress proxy: host {host!r} (port {port}) is not allowed. {how_to_allow(host, port)}",
                         host, port, "not_allowed", allowed=box.allow.entries[:ALLOWED_SHOWN],
                         more=max(0, len(box.allow.entries) - ALLOWED_SHOWN))
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise Denied(f"pygent egress proxy: cannot resolve {host!r}: {exc}", host, port, "unresolvable") from None
        refused = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            addr = ipaddress.ip_address(sockaddr[0].split("%")[0])
            if box.allows_address(addr):
                return str(addr), port
            refused.append(str(addr))
        addresses = sorted(set(refused))
        raise Denied(
            f"pygent egress proxy: host {host!r} resolves to {', '.join(addresses)}, a private, loopback, "
            "link-local or reserved address, which is refused unless its range is allowed explicitly (e.g. 10.0.0.0/8)",
            host, port, "private", addresses=addresses[:4],
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.active += 1
        self.last_use = time.monotonic()
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self.active -= 1
            self.last_use = time.monotonic()
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.anonymous >= MAX_ANONYMOUS:
            return
        self.anonymous += 1
        try:
            box = self.identify(await asyncio.wait_for(reader.readuntil(b"\r\n"), ID_TIMEOUT))
        finally:
            self.anonymous -= 1
        if box is None or len(box.active) >= box.conns:
            # Read the request's head first: a unix socket closed with unread bytes resets its peer,
            # which may then lose our answer (the relay would show the client a bare close).
            while await asyncio.wait_for(reader.readuntil(b"\r\n"), ID_TIMEOUT) != b"\r\n":
                pass
        if box is None:
            return await _answer(writer, 403, "pygent egress proxy: this connection did not come from a sandbox's relay "
                                              "with a valid ticket; use HTTP_PROXY / HTTPS_PROXY")
        if len(box.active) >= box.conns:
            return await _answer(writer, 429, f"pygent egress proxy: this sandbox already has {box.conns} connections "
                                              "open through the egress proxy, its bound; close some, or raise it "
                                              "with SandboxPolicy(egress_connections=N)")
        key = id(writer)
        box.active[key] = (None, 0, writer)
        try:
            await self._serve(box, key, reader, writer)
        finally:
            box.active.pop(key, None)

    async def _serve(self, box: Box, key: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        if head.startswith(b"PYGENT-HOLD"):
            del box.active[key]  # the relay's own connection: not one of the sandbox's
            self.holders += 1
            self.claims.clear()  # settled: the proxy is held
            try:
                await reader.read()  # until the sandbox (its relay) goes away
            finally:
                self.holders -= 1
            return
        if head.startswith(b"PYGENT-RULES"):  # the newer ticket was on the first line: applied by identify
            writer.write(b"PYGENT-APPLIED %d %s\r\n" % (box.seq, applied_proof(self.secret, box.id, box.seq).encode()))
            return await writer.drain()
        lines = head.split(b"\r\n")
        try:
            method, target, version = lines[0].decode("latin-1").split(" ")
        except ValueError:
            return await _answer(writer, 400, "pygent egress proxy: malformed request line")
        try:
            if method.upper() == "CONNECT":
                host, port = split_host_port(target, 443)
                addr = await self.check(host, port, box)
                box.active[key] = (host, port, writer)
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*addr), CONNECT_TIMEOUT)
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                return await _pipe(reader, writer, up_reader, up_writer, limit=box)
            if not target.lower().startswith("http://"):
                raise Denied(
                    f"pygent egress proxy: {target[:100]!r} is not an absolute http:// URL; "
                    "use HTTP_PROXY for http and CONNECT (HTTPS_PROXY) for https"
                )
            rest = target[len("http://"):]
            authority, slash, path = rest.partition("/")
            host, port = split_host_port(authority.rpartition("@")[2], 80)
            addr = await self.check(host, port, box)
            box.active[key] = (host, port, writer)
        except Denied as exc:
            return await _answer(writer, 403, str(exc), exc.refusal)
        except (OSError, asyncio.TimeoutError) as exc:
            return await _answer(writer, 502, f"pygent egress proxy: cannot connect to {target[:100]}: {exc or type(exc).__name__}")
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*addr), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            return await _answer(writer, 502, f"pygent egress proxy: cannot connect to {host}:{port}: {exc or type(exc).__name__}")
        out = [f"{method} /{path if slash else ''} {version}".encode("latin-1")]
        for line in lines[1:]:
            if line and line.split(b":", 1)[0].strip().lower() not in _HOP:
                out.append(line)
        out.append(b"Connection: close")
        up_writer.write(b"\r\n".join(out) + b"\r\n\r\n")
        await _pipe(reader, writer, up_reader, up_writer, limit=box)

    async def reap_when_idle(self, server: asyncio.AbstractServer) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.linger / 2))
            now = time.monotonic()
            self.claims = [t for t in self.claims if t > now]
            if self.holders == 0 and self.active == 0 and not self.claims and now - self.last_use > self.linger:
                server.close()
                return


async def _answer(writer: asyncio.StreamWriter, status: int, text: str, refusal: dict | None = None) -> None:
    body = (text + "\n").encode()
    reason = {400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests", 502: "Bad Gateway"}[status]
    # json.dumps escapes CR/LF and everything outside ASCII: the header cannot be split or forged by a host name.
    extra = f"{REFUSED_HEADER.decode()}: {json.dumps(refusal)}\r\n" if refusal else ""
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nX-Pygent-Egress: refused\r\n{extra}\r\n".encode() + body
    )
    await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: "Box | None" = None) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if limit is not None:
                await limit.spend(len(data))
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
    down: "object | None" = None, limit: "Box | None" = None,
) -> None:
    """Both directions until both ends; `down` (a coroutine) replaces the upstream -> client copy;
    `limit`: the sandbox whose bandwidth both directions spend."""
    try:
        await asyncio.gather(_copy(reader, up_writer, limit), down or _copy(up_reader, writer, limit))
    finally:
        up_writer.close()


async def serve(config: dict) -> None:
    proxy = Proxy(Allowlist(list(config["allow"])), float(config.get("linger", 30.0)), str(config["secret"]))
    path = config["socket"]
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = await asyncio.start_unix_server(proxy.handle, path=path, limit=MAX_HEAD)
    os.chmod(path, 0o666)  # sandboxes run as any uid; the socket is their only door and the proxy checks everything
    import signal

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, proxy.claim)
    print("ready", flush=True)  # the host waits for this line on the attach stream before using us
    await proxy.reap_when_idle(server)


# --------------------------------------------------------------------------- the relay (in the sandbox)


async def _relay_one(path: str, ident: bytes, notes: int | None, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(path)
        up_writer.write(ident)  # who we are, before the client's first byte
    except OSError:
        await _answer(writer, 502, "pygent egress relay: the egress proxy is not reachable (it stopped?); start a new sandbox")
        writer.close()
        return
    try:
        down = None if notes is None else _watch_answer(notes, up_reader, writer)
        await _pipe(reader, writer, up_reader, up_writer, down)
    finally:
        writer.close()


async def _watch_answer(notes: int, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The proxy -> client direction, recording a refusal (note_refusal) before the client sees its 403."""
    try:
        first = await _first_answer(up_reader)
    except OSError:
        return
    record = refusal_record(first)
    if record is not None:
        note_refusal(notes, record)  # the server reads it when the command ends, after the client saw the 403
    if first:
        writer.write(first)
    await _copy(up_reader, writer)


async def _first_answer(up_reader: asyncio.StreamReader) -> bytes:
    """The proxy's first bytes; a whole head when they start a 403 (the proxy writes it in one piece)."""
    data = await up_reader.read(65536)
    while data.startswith(b"HTTP/1.1 403 ") and b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
        more = await up_reader.read(65536)
        if not more:
            break
        data += more
    return data


def refusal_record(answer: bytes) -> bytes | None:
    """The X-Pygent-Refused header's JSON from a proxy's 403 head, or None (any other answer)."""
    if not answer.startswith(b"HTTP/1.1 403 "):
        return None
    prefix = b"\r\n" + REFUSED_HEADER + b": "
    head = answer.partition(b"\r\n\r\n")[0]
    start = head.find(prefix)
    if start < 0:
        return None
    value = head[start + len(prefix):].partition(b"\r\n")[0]
    return value if len(value) < RECORD_MAX else None


def note_refusal(fd: int, record: bytes) -> None:
    """One line (monotonic time, tab, the record) on the pipe the command server reads; dropped when it is full."""
    try:
        os.write(fd, b"%.6f\t%s\n" % (time.monotonic(), record))
    except OSError:  # full (the server reads it at each command's end) or closed (the server is gone)
        pass


_HOLD = b"PYGENT-HOLD\r\n\r\n"


def id_line(ticket: str) -> bytes:
    return ID_PREFIX + ticket.encode("ascii") + b"\r\n"


async def _hold(path: str, ident: bytes, first: int | None) -> None:
    """Keep one connection open to the proxy while we live (it lingers, then exits, without any)."""
    while True:
        try:
            if first is not None:
                reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=first))
                first = None
            else:
                reader, writer = await asyncio.open_unix_connection(path)
                writer.write(ident + _HOLD)
                await writer.drain()
            await reader.read()
        except OSError:
            pass
        await asyncio.sleep(0.5)


async def _relay(fd: int, path: str, ident: bytes, hold: int | None, notes: int | None) -> None:
    listener = socket.socket(fileno=fd)
    server = await asyncio.start_server(lambda r, w: _relay_one(path, ident, notes, r, w), sock=listener)
    async with server:
        await asyncio.gather(_hold(path, ident, hold), server.serve_forever())


def relay(port: int, path: str, ticket: str, command: list[str]) -> None:
    """Listen, fork the relay off (reparented to init), exec `command` here. Never returns.

    Only `_socket` and `os` before the exec: this runs on every allowlisted sandbox's start path.
    The relay shares the sandbox's CPU limit with the command server, so it holds the proxy
    with a bare socket, lowers its priority and imports asyncio (~45 ms of CPU) only once a
    first client connects: the server's start is not delayed, and a sandbox that never uses
    the network never pays for it.
    """
    import _socket

    listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    # Refusals go to the command server on a pipe (NOTES_ENV names its read end): the server
    # reads it when a command ends and reports the refusals made while it ran (protocol.Done).
    notes_r, notes_w = os.pipe()
    # Hold the proxy before the command server starts: once the host hears from the server,
    # the proxy has our holder (or its claim for us still stands), so it cannot exit under us.
    hold = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        hold.connect(path)
        hold.sendall(ID_PREFIX + ticket.encode("ascii") + b"\r\n" + _HOLD)
        held: int | None = hold.fileno()
    except OSError:
        held = None  # _hold retries
    if os.fork() == 0:
        os.close(notes_r)
        os.set_blocking(notes_w, False)
        os.setsid()
        if os.fork() == 0:  # the command server never sees it as its child
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            try:
                os.nice(19)
                if held is not None:
                    held = hold.detach()
                else:
                    hold.close()
                import select

                select.select([listener], [], [])
                _imports()
                asyncio.run(_relay(listener.detach(), path, id_line(ticket), held, notes_w))
            finally:
                os._exit(0)
        os._exit(0)
    os.wait()
    hold.close()  # the relay has its own copy
    listener.close()
    os.close(notes_w)
    os.set_inheritable(notes_r, True)
    os.environ[NOTES_ENV] = str(notes_r)
    os.execvp(command[0], command)


if __name__ == "__main__":
    if sys.argv[1] == "relay":
        relay(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        asyncio.run(serve(json.loads(sys.argv[2])))
