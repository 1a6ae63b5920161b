"""Byte streams to an engine: unix, tcp, tcp+TLS and ssh (`docker system dial-stdio`).

Why separate from the client (as httpx keeps transports apart from HTTP): the
client writes HTTP/1.1 on whatever `connect()` returns, and attach, archives and
events work the same over each. Every transport hands back a `socket.socket`
(an `ssl.SSLSocket` for TLS, one end of a socketpair for ssh) so timeouts, poll
and shutdown behave alike.

SSH as the docker CLI does it (cli/connhelper): `ssh [-l user] [-p port] host
docker system dial-stdio`, with the user's own ssh client, config and agent.
BatchMode keeps ssh from prompting a process that has no terminal; the ssh
process's stdin and stdout are the other end of the socketpair, so no thread
copies bytes. Each connection is one ssh session (like the CLI): a
ControlMaster in ~/.ssh/config makes them cheap.

`explain()` turns what went wrong into an error that names the fix.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from ..errors import EngineRefused, EngineUnavailable

if TYPE_CHECKING:
    import ssl
    import subprocess

    from .endpoint import Endpoint, TLSFiles

#: What Go's TLS server answers a plain HTTP request with (dockerd, `--tlsverify`).
PLAIN_TO_TLS = b"HTTP request to an HTTPS server"
#: Seconds ssh may take to reach the remote (its ConnectTimeout).
SSH_CONNECT_TIMEOUT = 30


def connect(ep: "Endpoint", timeout: float | None) -> socket.socket:
    """A connected byte stream to the engine. Raises EngineUnavailable, or EngineRefused with the fix."""
    if ep.scheme == "ssh":
        return _ssh(ep)
    try:
        if ep.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(ep.address)
            except BaseException:
                sock.close()
                raise
            return sock
        hostname, port = split_hostport(ep.address)
        sock = socket.create_connection((hostname, port), timeout=timeout)
    except PermissionError:
        raise EngineRefused(
            f"permission denied on {ep.address} ({ep.source}): join the engine's group"
            f" (`sudo usermod -aG docker {os.environ.get('USER', '$USER')}`, then log in again), or use a rootless engine"
        ) from None
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(f"no engine answers at {ep.host} ({ep.source}): {exc}") from None
    if ep.tls is None:
        return sock
    try:
        return _tls_context(ep.tls).wrap_socket(sock, server_hostname=hostname)
    except OSError as exc:
        sock.close()
        raise explain(ep, exc) from None


def probe(ep: "Endpoint", timeout: float = 10.0) -> None:
    """Open a stream and see an HTTP answer to /_ping; raise what went wrong, with its fix.

    For callers whose own HTTP stack failed opaquely (docker-py's requests): the
    transport's explanation is the same as the stdlib client's.
    """
    sock = connect(ep, timeout)
    answer = b""
    try:
        sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                raise explain(ep, None, answer, sock)
            answer += chunk
        if PLAIN_TO_TLS in answer and ep.tls is None:
            raise explain(ep, None, answer)
    except EngineUnavailable:
        raise
    except OSError as exc:
        raise explain(ep, exc, answer, sock) from None
    finally:
        sock.close()


def split_hostport(address: str) -> tuple[str, int]:
    """("host", port) for "host:port" or "[v6]:port". Raises ValueError for a bad port."""
    hostname, _, port = address.rpartition(":")
    return hostname.strip("[]") or "localhost", int(port)


def explain(ep: "Endpoint", exc: BaseException | None, answer: bytes = b"", sock: socket.socket | None = None) -> EngineUnavailable:
    """The error, with its fix, for a failure on ep's transport (exc raised, or the bytes the engine sent).

    `sock`: the connection, when it ended before the engine answered (an ssh command says why on stderr).
    """
    ssl = sys.modules.get("ssl")
    if ep.scheme == "tcp" and ep.tls is None and PLAIN_TO_TLS in answer:
        return EngineRefused(
            f"the engine at {ep.host} ({ep.source}) speaks TLS and pygent spoke plain HTTP:"
            " export DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=<dir with ca.pem, cert.pem, key.pem>"
            " (or use a docker context with its TLS material)"
        )
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return _explain_tls(ep, exc, ssl)
    if sock is not None and isinstance(sock, CommandSocket):
        return explain_command(ep, sock)
    return EngineUnavailable(f"lost the engine at {ep.host}: {exc}" if exc else f"the engine at {ep.host} closed the connection")


def _explain_tls(ep: "Endpoint", exc: Any, ssl: Any) -> EngineRefused:
    tls = ep.tls
    ca = tls.ca if tls and tls.ca else "the system's CA store"
    where = f"the engine at {ep.host} ({ep.source})"
    reason = (getattr(exc, "reason", None) or str(exc)).upper()
    if isinstance(exc, ssl.SSLCertVerificationError):
        return EngineRefused(
            f"{where}: its certificate does not verify against {ca} ({exc.verify_message}):"
            " point DOCKER_CERT_PATH at the directory holding the CA that signed the engine's certificate"
            " (ca.pem), or fix the context's TLS material (`docker context update --docker ca=...`)"
        )
    if "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason or "HANDSHAKE_FAILURE" in reason:
        have = "no client certificate" if not (tls and tls.cert) else f"the client certificate {tls.cert}"
        return EngineRefused(
            f"{where} refused {have}: the engine requires a client certificate signed by its CA;"
            " put cert.pem and key.pem beside ca.pem in DOCKER_CERT_PATH (or the context's TLS material)"
        )
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason or "PACKET_LENGTH" in reason:
        return EngineRefused(
            f"{where} does not speak TLS: unset DOCKER_TLS_VERIFY (and use plain tcp:// on loopback only),"
            " or point DOCKER_HOST at the engine's TLS port (2376 by convention)"
        )
    return EngineRefused(f"{where}: TLS failed ({exc}); check DOCKER_CERT_PATH's ca.pem, cert.pem and key.pem")


def _tls_context(tls: "TLSFiles") -> "ssl.SSLContext":
    """One SSLContext per set of files (loading them costs ~1 ms a connection otherwise)."""
    hit = _contexts.get(tls)
    if hit is not None:
        return hit
    import ssl

    from ..errors import ConfigError

    try:
        if tls.verify:
            ctx = ssl.create_default_context(cafile=tls.ca) if tls.ca else ssl.create_default_context()
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if tls.cert:
            ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"the TLS files for the engine cannot be loaded ({exc}): DOCKER_CERT_PATH (or the context's TLS"
            " material) must hold ca.pem, cert.pem and key.pem, readable by you"
        ) from None
    _contexts[tls] = ctx
    return ctx


_contexts: dict[Any, Any] = {}


class CommandSocket(socket.socket):
    """Our end of a socketpair whose other end is a command's stdin and stdout (ssh ... dial-stdio).

    Closing it ends the command too: nothing outlives the connection.
    """

    def __init__(self, sock: socket.socket, proc: "subprocess.Popen", stderr: Any) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self.proc, self.stderr = proc, stderr

    def close(self) -> None:
        super().close()
        proc = getattr(self, "proc", None)
        if proc is None:
            return
        self.proc = None
        self.stderr.close()
        # Our end closed: ssh sees EOF and exits within milliseconds. Waiting here would add
        # that to every request, so it is reaped later (next connect, or at exit).
        if proc.poll() is None:
            _exiting.append(proc)

    def stderr_text(self, wait: float = 5.0) -> tuple[int | None, str]:
        """(exit status or None, what the command printed on stderr), after it ends (up to `wait` s)."""
        import subprocess

        proc = self.proc
        if proc is None:
            return None, ""
        try:
            code = proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            code = None
        self.stderr.seek(0)
        return code, self.stderr.read().decode("utf-8", "replace").strip()


def ssh_command(ep: "Endpoint") -> list[str]:
    """The ssh command line for ep, as the docker CLI's connhelper builds it."""
    user, _, hostport = ep.address.rpartition("@")
    host, port = hostport, ""
    if hostport.count(":") == 1 or hostport.startswith("["):
        host, _, port = hostport.rpartition(":")
        host = host.strip("[]")
    cmd = [os.environ.get("PYGENT_SSH", "ssh"), "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}"]
    if user:
        cmd += ["-l", user]
    if port:
        cmd += ["-p", port]
    return cmd + ["--", host, "docker", "system", "dial-stdio"]


#: ssh processes whose connection closed and that were still exiting then.
_exiting: list["subprocess.Popen"] = []


def _reap(kill: bool = False) -> None:
    """Collect the ssh processes that have exited; with kill, end the rest (at exit)."""
    for proc in list(_exiting):
        if proc.poll() is None and kill:
            proc.kill()
            proc.wait()
        if proc.returncode is not None:
            _exiting.remove(proc)


def _ssh(ep: "Endpoint") -> socket.socket:
    # Imported here: only ssh needs them, and the exec fast path pays for every import.
    import atexit
    import subprocess
    import tempfile

    if not _exiting:
        atexit.unregister(_reap)
        atexit.register(_reap, True)
    _reap()
    ours, theirs = socket.socketpair()
    errfile = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(
            ssh_command(ep), stdin=theirs, stdout=theirs, stderr=errfile,
            close_fds=True, start_new_session=True,  # a ^C to us reaches us, not ssh mid-request
        )
    except OSError as exc:
        ours.close()
        errfile.close()
        raise EngineRefused(
            f"cannot run ssh for {ep.host} ({ep.source}): {exc}; install the OpenSSH client (Debian: openssh-client)"
        ) from None
    finally:
        theirs.close()
    return CommandSocket(ours, proc, errfile)


def explain_command(ep: "Endpoint", sock: socket.socket) -> EngineUnavailable:
    """Why a command transport (ssh) ended before the engine answered, with the fix."""
    if not isinstance(sock, CommandSocket):
        return EngineUnavailable(f"the engine at {ep.host} ({ep.source}) closed the connection")
    code, err = sock.stderr_text()
    last = err.splitlines()[-1] if err else ""
    user, _, hostport = ep.address.rpartition("@")
    hostname = hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport
    port = hostport.rsplit(":", 1)[1] if hostport.count(":") == 1 else "22"
    if "Host key verification failed" in err or "host key for" in err.lower():
        return EngineRefused(
            f"ssh to {ep.host} ({ep.source}): the remote's host key is not known (or changed): check it and add it,"
            f" e.g. `ssh-keyscan -p {port} {hostname} >> ~/.ssh/known_hosts` (or connect once with `ssh -p {port} {hostport}`)"
        )
    if "Permission denied" in err or "Too many authentication failures" in err:
        return EngineRefused(
            f"ssh to {ep.host} ({ep.source}) was refused ({last}): load your key into the agent (`ssh-add`) or name it"
            " in ~/.ssh/config (IdentityFile), and make sure the remote's authorized_keys holds its public key"
        )
    if code == 127 or "command not found" in err or "docker: not found" in err:
        return EngineRefused(
            f"ssh to {ep.host} ({ep.source}) worked, but the remote has no `docker` command ({last}):"
            " install the docker CLI there (`docker system dial-stdio` runs on the remote) and put it on the login PATH"
        )
    if "dial-stdio" in err or "Cannot connect to the Docker daemon" in err or "permission denied" in err.lower():
        return EngineRefused(
            f"ssh to {ep.host} ({ep.source}) worked, but the remote's docker cannot reach its engine ({last}):"
            " start the engine there, and make the ssh user a member of its docker group"
        )
    detail = f": {last}" if last else (f" (ssh exited {code})" if code is not None else "")
    return EngineUnavailable(f"the ssh transport to {ep.host} ({ep.source}) ended before the engine answered{detail}")
