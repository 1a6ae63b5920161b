"""The egress tests' own hosts: an HTTP and an HTTPS server on a private bridge network the tests create.

Nothing here talks to any address but these containers (and loopback). The
egress proxy is pointed at this network (PYGENT_EGRESS_NETWORK) and given pinned
names (PYGENT_EGRESS_HOSTS), so every name it resolves is one of ours.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from pygent.sandbox import lifecycle

#: A test server: answers every GET with "hello from NAME"; TLS when given a cert. Two kinds of
#: path answer otherwise: /bytes/N streams N bytes (bandwidth), /srv/... serves the files the
#: tests put in /srv (a package index, a git repository, an npm registry), a directory by its
#: index.html or index.json.
SERVER = r"""
import http.server, os, ssl, sys
name, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/bytes/"):
            return self.stream(int(self.path.split("/")[2]))
        if self.path.startswith("/srv/"):
            return self.file(os.path.normpath("/srv/" + self.path[5:].split("?")[0]))
        body = f"hello from {name} {self.path}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def stream(self, n):
        self.send_response(200); self.send_header("Content-Length", str(n)); self.end_headers()
        chunk = b"x" * 65536
        try:
            while n > 0:
                self.wfile.write(chunk[:n]); n -= len(chunk)
        except OSError:
            pass
    def file(self, path):
        for candidate in (path, path + "/index.html", path + "/index.json"):
            if candidate.startswith("/srv/") and os.path.isfile(candidate):
                break
        else:
            return self.send_error(404)
        data = open(candidate, "rb").read()
        kind = {".html": "text/html", ".json": "application/json"}.get(os.path.splitext(candidate)[1], "application/octet-stream")
        self.send_response(200); self.send_header("Content-Type", kind); self.send_header("Content-Length", str(len(data)))
        self.end_headers(); self.wfile.write(data)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("0.0.0.0", port), H)
if os.environ.get("CERT"):
    open("/tmp/c.pem", "w").write(os.environ["CERT"]); open("/tmp/k.pem", "w").write(os.environ["KEY"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain("/tmp/c.pem", "/tmp/k.pem")
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("listening", flush=True)
srv.serve_forever()
"""

#: Run in a sandbox: `python3 - URL [CAFILE]` prints {"status", "body"} or {"error"} (urllib honours *_PROXY).
FETCH = r"""
import json, ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv) > 2 else None
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=20, context=ctx)
    print(json.dumps({"status": r.status, "body": r.read().decode()}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
"""

#: Run in a sandbox: `python3 - HOST:PORT` sends CONNECT to the relay and prints the proxy's whole answer.
CONNECT = r"""
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])), timeout=20)
s.sendall(f"CONNECT {sys.argv[1]} HTTP/1.1\r\nHost: {sys.argv[1]}\r\n\r\n".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.decode())
"""

#: Run in a sandbox: `python3 - ADDR PORT` tries a direct TCP connection and prints the outcome.
DIRECT = r"""
import socket, sys
s = socket.socket(); s.settimeout(5)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("connected")
except OSError as e:
    print(f"errno={e.errno} {e}")
"""


@dataclass
class Hosts:
    network: str
    subnet: str
    gateway: str
    web: str  # container name = host name on the network
    web_ip: str
    secure: str
    secure_ip: str
    cert: str
    env: dict[str, str] = field(default_factory=dict)
    containers: list = field(default_factory=list)


def _cert(name: str) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{tmp}/k.pem", "-out", f"{tmp}/c.pem", "-days", "2", "-subj", f"/CN={name}",
             "-addext", f"subjectAltName=DNS:{name}"],
            check=True, capture_output=True,
        )
        return Path(tmp, "c.pem").read_text(), Path(tmp, "k.pem").read_text()


def _server(client, image: str, network: str, name: str, port: int, env: dict[str, str], files: Path | None):
    c = client.containers.create(
        image, ["python3", "-c", SERVER, name, str(port)], name=name, network=network, environment=env,
        volumes={str(files): {"bind": "/srv", "mode": "ro"}} if files else None,
        labels=lifecycle.owner_labels(), user="1000:1000", read_only=True, tmpfs={"/tmp": "size=1m"},
        cap_drop=["ALL"], security_opt=["no-new-privileges:true"], pids_limit=64, mem_limit="64m", auto_remove=True,
    )
    stream = c.attach(stdout=True, stream=True)
    c.start()
    for chunk in stream:  # until the server says it listens (or the stream ends: it failed)
        if b"listening" in chunk:
            break
    c.reload()
    return c, c.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def start(client, image: str, files: Path | None = None) -> Hosts:
    """The two servers; `files`: a host directory both serve read-only under /srv/."""
    tag = uuid.uuid4().hex[:8]
    net = client.networks.create(f"pygent-test-egress-{tag}", driver="bridge", labels=lifecycle.owner_labels())
    ipam = client.api.inspect_network(net.id)["IPAM"]["Config"][0]
    web, secure = f"web-{tag}", f"secure-{tag}"
    cert, key = _cert(secure)
    hosts = Hosts(net.name, ipam["Subnet"], ipam["Gateway"], web, "", secure, "", cert)
    try:
        c1, hosts.web_ip = _server(client, image, net.name, web, 8080, {}, files)
        hosts.containers.append(c1)
        c2, hosts.secure_ip = _server(client, image, net.name, secure, 8443, {"CERT": cert, "KEY": key}, files)
        hosts.containers.append(c2)
    except BaseException:
        stop(client, hosts)
        raise
    hosts.env = {
        "PYGENT_EGRESS_NETWORK": net.name,
        # Names the proxy resolves itself: one to loopback and one to the metadata address (rebinding).
        "PYGENT_EGRESS_HOSTS": f"rebind-{tag}.test=127.0.0.1,metadata-{tag}.test=169.254.169.254",
        "PYGENT_EGRESS_LINGER": "2",
    }
    return hosts


@contextlib.contextmanager
def running(client, image: str, files: Path | None = None) -> Iterator[Hosts]:
    """start(), with the egress settings that point the proxy at them set in os.environ; stop() after."""
    h = start(client, image, files)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in h.env.items():
                mp.setenv(k, v)
            yield h
    finally:
        stop(client, h)


def allowlist(h: Hosts, *extra: str, private: bool = True) -> tuple[str, ...]:
    """Both servers (on their ports), the names pinned to loopback and metadata, the servers' subnet (unless not private)."""
    tag = h.web.removeprefix("web-")
    names = (f"{h.web}:8080", f"{h.secure}:8443", f"rebind-{tag}.test:8080", f"metadata-{tag}.test")
    return names + ((h.subnet,) if private else ()) + extra


def stop(client, hosts: Hosts) -> None:
    """Remove the servers, any egress proxy still on the network (ours), then the network."""
    api = client.api
    for c in hosts.containers:
        try:
            c.remove(force=True)
        except Exception:
            pass
    for c in api.containers(all=True, filters={"network": hosts.network}):
        try:
            api.remove_container(c["Id"], force=True)
        except Exception:
            pass
    for _ in range(50):
        try:
            api.remove_network(hosts.network)
            return
        except Exception as exc:
            if "No such network" in str(exc) or "not found" in str(exc):
                return
            time.sleep(0.1)  # a container is still being removed from it


def sandbox_json(result) -> dict:
    return json.loads(result.stdout.decode().strip().splitlines()[-1])
