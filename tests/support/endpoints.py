"""Real engines and servers for the endpoint tests: a TLS dockerd, an sshd, a non-root user.

Each is started by the test that needs it, on 127.0.0.1 or its own unix socket,
with its own state directories, and stopped by PID when the test module ends.
Nothing here touches the shared engine's configuration: images reach the TLS
engine by `docker save | docker load`, and the shared socket is only chgrp'ed
(scripts/ensure-users.sh) so the `docker` group may use it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
USER = os.environ.get("PYGENT_TEST_USER", "pygent-user")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(sock_path: str | Path) -> bool:
    """Does an engine answer GET /_ping on this unix socket (root may connect to any)?"""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock_path))
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            return b" 200 " in s.recv(256)
    except OSError:
        return False


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)
    assert res.returncode == 0, f"{cmd}: {res.stdout[-1500:]}{res.stderr[-1500:]}"
    return res


def _stop(proc: subprocess.Popen, wait: float = 20.0) -> None:
    """SIGTERM by PID, then SIGKILL: the process and what it started in its group."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- certificates


@dataclass
class Certs:
    """A CA, a server pair for 127.0.0.1, a client pair, and an unrelated CA, made by openssl."""

    dir: Path
    client_dir: Path  # ca.pem, cert.pem, key.pem: a DOCKER_CERT_PATH
    wrong_ca_dir: Path  # another CA's ca.pem with the right client pair
    no_cert_dir: Path  # ca.pem only


def make_certs(base: Path) -> Certs:
    base.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        _run(["openssl", *args], cwd=base)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        ssl("req", "-x509", *ec, "-keyout", f"{ca}-key.pem", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=pygent test {ca}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, usage, alt in (("server", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "clientAuth", "")):
        (base / f"{name}.ext").write_text(
            f"extendedKeyUsage={usage}\nkeyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\n"
            f"authorityKeyIdentifier=keyid,issuer\nbasicConstraints=critical,CA:FALSE\n{alt}\n")
        ssl("req", *ec, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN=pygent test {name}")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-out", f"{name}-cert.pem", "-days", "2", "-extfile", f"{name}.ext")
    dirs = {}
    for d, ca, pair in (("client", "ca.pem", True), ("wrong-ca", "other-ca.pem", True), ("no-cert", "ca.pem", False)):
        path = base / d
        path.mkdir()
        shutil.copy(base / ca, path / "ca.pem")
        if pair:
            shutil.copy(base / "client-cert.pem", path / "cert.pem")
            shutil.copy(base / "client-key.pem", path / "key.pem")
        dirs[d] = path
    return Certs(base, dirs["client"], dirs["wrong-ca"], dirs["no-cert"])


# --------------------------------------------------------------------------- a second dockerd


@dataclass
class TLSEngine:
    """A dockerd of the test's own: --tlsverify on 127.0.0.1:port, its own state, no networking."""

    port: int
    certs: Certs
    unix: str
    proc: subprocess.Popen | None = None
    base: Path = field(default_factory=Path)
    had_docker0: bool = False  # the shared engine's bridge existed when this one started

    @property
    def host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def tls_env(self, cert_dir: Path | None = None) -> dict[str, str]:
        return {"DOCKER_HOST": self.host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_dir or self.certs.client_dir)}


#: The TLS engine's own bridge (a name of ours, made by the test, left for the next run).
TLS_BRIDGE = "pygent-tls0"


def start_tls_engine(images: list[str]) -> TLSEngine:
    """Start the TLS engine and load `images` into it from the shared engine (docker save | docker load)."""
    base = Path(tempfile.mkdtemp(prefix="pgt-", dir="/tmp"))  # short: containerd's socket paths are limited
    certs = make_certs(base / "certs")
    port = free_port()
    unix = str(base / "docker.sock")
    log = open(base / "dockerd.log", "wb")
    c = certs.dir
    had_docker0 = subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0
    # Its own bridge, never --bridge=none: with none, dockerd deletes docker0, the shared
    # engine's default bridge (seen here: every later `network="bridge"` sandbox failed).
    if subprocess.run(["ip", "link", "show", TLS_BRIDGE], capture_output=True).returncode != 0:
        subprocess.run(["ip", "link", "add", TLS_BRIDGE, "type", "bridge"], check=True)
    proc = subprocess.Popen(
        ["dockerd", "--tlsverify", f"--tlscacert={c / 'ca.pem'}", f"--tlscert={c / 'server-cert.pem'}",
         f"--tlskey={c / 'server-key.pem'}", "-H", f"tcp://127.0.0.1:{port}", "-H", f"unix://{unix}",
         f"--data-root={base / 'root'}", f"--exec-root={base / 'exec'}", f"--pidfile={base / 'docker.pid'}",
         "--iptables=false", "--ip-masq=false", f"--bridge={TLS_BRIDGE}", "--ip-forward=false", "--userland-proxy=false",
         "--cgroup-parent=pygent-tls-test"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    engine = TLSEngine(port, certs, unix, proc, base, had_docker0)
    env = dict(os.environ, DOCKER_HOST=f"unix://{unix}")
    env.pop("DOCKER_CONTEXT", None)
    for _ in range(120):
        if proc.poll() is not None:
            break
        if subprocess.run(["docker", "version"], env=env, capture_output=True, timeout=10).returncode == 0:
            break
        time.sleep(0.25)
    else:
        stop_tls_engine(engine)
        raise AssertionError("the TLS dockerd did not answer: " + (base / "dockerd.log").read_text()[-2000:])
    if proc.poll() is not None:
        raise AssertionError("the TLS dockerd exited: " + (base / "dockerd.log").read_text()[-2000:])
    if images:
        try:
            save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
            load = subprocess.run(["docker", "load", "-q"], stdin=save.stdout, env=env, capture_output=True, timeout=300)
            save.stdout.close()
            assert save.wait(timeout=60) == 0 and load.returncode == 0, load.stderr
        except BaseException:
            stop_tls_engine(engine)
            raise
    return engine


def stop_tls_engine(engine: TLSEngine) -> None:
    """Stop the engine by PID (it stops its own containerd and containers), then remove its state."""
    env = dict(os.environ, DOCKER_HOST=f"unix://{engine.unix}")
    leftover = subprocess.run(["docker", "ps", "-aq"], env=env, capture_output=True, text=True, timeout=30).stdout.split()
    if engine.proc is not None:
        _stop(engine.proc, wait=30)
    # Its log outlives its state, for whoever reads a failure (CI keeps tests/artifacts/).
    artifacts = Path(__file__).parents[1] / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copyfile(engine.base / "dockerd.log", artifacts / "tls-dockerd.log")
    subprocess.run(["umount", "-R", "-l", str(engine.base / "root")], capture_output=True)
    subprocess.run(["umount", "-R", "-l", str(engine.base / "exec")], capture_output=True)
    shutil.rmtree(engine.base, ignore_errors=True)
    assert not leftover, f"containers left on the TLS engine: {leftover}"
    docker0 = subprocess.run(["ip", "link", "show", "docker0"], capture_output=True)
    assert docker0.returncode == 0 or not engine.had_docker0, "the TLS engine took the shared engine's docker0 bridge"


# --------------------------------------------------------------------------- the non-root user


@dataclass
class TestUser:
    name: str
    home: Path
    venv: Path  # pygent-runner installed from this checkout, as a user would (pip install, not editable)

    @property
    def cli(self) -> str:
        return str(self.venv / "bin" / "pygent-runner")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a fresh login of the user has (no DOCKER_* of ours), plus extra."""
        uid = _uid(self.name)
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "PATH": "/usr/local/bin:/usr/bin:/bin",
               "LANG": "C.UTF-8", "XDG_RUNTIME_DIR": f"/run/user/{uid}", "PYGENT_POOL_SIZE": "0"}
        env.update(extra)
        return env

    def run(self, cmd: list[str], env: dict[str, str] | None = None, timeout: float = 120, groups: bool = True,
            **kw) -> subprocess.CompletedProcess:
        """Run cmd as the user (setpriv: its uid, gid and groups, nothing kept from root).

        groups=False: without its supplementary groups (as a user not yet in `docker`)."""
        full = ["setpriv", f"--reuid={self.name}", f"--regid={self.name}",
                "--init-groups" if groups else "--clear-groups", "--reset-env", "--",
                "env", "-i", *[f"{k}={v}" for k, v in (env or self.env()).items()], *cmd]
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout, cwd=str(self.home), **kw)


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def ensure_user() -> TestUser:
    """The user (scripts/ensure-users.sh) and pygent installed for it from this checkout.

    Why a venv of its own: the checkout's .venv may use an interpreter under /root, which a
    non-root user cannot run; Debian's python3 is everyone's. Reinstalled only when the
    checkout's sources changed (a stamp of their sizes and times).
    """
    name = _run(["bash", str(ROOT / "scripts" / "ensure-users.sh")], timeout=900).stdout.strip().splitlines()[-1]
    import pwd

    home = Path(pwd.getpwnam(name).pw_dir)
    uid = pwd.getpwnam(name).pw_uid
    run_dir = Path(f"/run/user/{uid}")
    if not run_dir.is_dir():
        run_dir.mkdir(parents=True, mode=0o700)
        os.chown(run_dir, uid, pwd.getpwnam(name).pw_gid)
    for stale in (run_dir / "docker.sock", run_dir / "podman" / "podman.sock"):
        if stale.exists() and not answers(stale):  # left by an engine of an earlier run that was killed
            stale.unlink()
    venv = home / ".pygent-venv"
    stamp = venv / ".pygent-stamp"
    digest = _source_digest()
    if not (stamp.is_file() and stamp.read_text() == digest):
        python = shutil.which("python3", path="/usr/bin") or "/usr/bin/python3"
        if not (venv / "bin" / "python").exists():
            _run([python, "-m", "venv", str(venv)])
        # A local directory is always rebuilt and reinstalled; dependencies already there are kept,
        # new ones (a changed pyproject) are added.
        _run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], timeout=900)
        stamp.write_text(digest)
        _run(["chown", "-R", f"{name}:{name}", str(venv)])
    return TestUser(name, home, venv)


def _source_digest() -> str:
    h = hashlib.sha256()
    for top in ("runner", "images", "pyproject.toml"):
        for path in sorted((ROOT / top).rglob("*")) if (ROOT / top).is_dir() else [ROOT / top]:
            if path.is_file() and "__pycache__" not in path.parts:
                st = path.stat()
                h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- an sshd of the test's own


@dataclass
class SSHServer:
    port: int
    nodocker_port: int  # sessions here get a PATH without docker (the "no docker on the remote" case)
    base: Path
    proc: subprocess.Popen
    host_key_pub: str


def start_sshd(user: TestUser, authorized_key: str, base: Path) -> SSHServer:
    """Debian's sshd on 127.0.0.1:<free port>, with its own host key and config; only `user` may log in."""
    base.mkdir(parents=True, exist_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / "host_key")])
    auth = base / "authorized_keys"
    auth.write_text(authorized_key)
    os.chmod(auth, 0o644)
    port, nodocker = free_port(), free_port()
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nPort {nodocker}\nListenAddress 127.0.0.1\nHostKey {base / 'host_key'}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {auth}\nAllowUsers {user.name}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin no\n"
        "PrintMotd no\nLogLevel VERBOSE\n"
        f"Match LocalPort {nodocker}\n  ForceCommand PATH=/nonexistent; eval \"$SSH_ORIGINAL_COMMAND\"\n"
    )
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd insists on
    log = open(base / "sshd.log", "wb")
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(100):
        if proc.poll() is not None:
            raise AssertionError("sshd exited: " + (base / "sshd.log").read_text()[-2000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return SSHServer(port, nodocker, base, proc, (base / "host_key.pub").read_text().strip())


def stop_sshd(server: SSHServer) -> None:
    _stop(server.proc, wait=10)


def python() -> str:
    return sys.executable
