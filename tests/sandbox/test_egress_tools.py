"""Egress every common tool can use (issue 25): in an allowlisted sandbox, git, pip, npm,
curl, Python's urllib and httpx, and Node's fetch each reach an allowed host through the
proxy variables alone, and each is refused for a host not on the allowlist.

The allowed host is the tests' own HTTPS server (support/egress_hosts.py), serving what
each tool fetches from a directory made here: a git repository (dumb HTTP), a package
index with httpx and its dependencies (wheels the host's pip downloads once, as the
Python matrix does), and an npm registry with one package. pip installs httpx from it
through the proxy, so httpx's own test runs on what came that way. Node comes from an
image built from Debian's nodejs and npm (support/images.py: node_image).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from pygent.sandbox import SandboxPolicy, open_sandbox
from pygent.sandbox.images import resolve_image
from support import egress_hosts
from support.egress_hosts import FETCH, allowlist, sandbox_json
from support.images import node_image

pytestmark = pytest.mark.docker

NPM_PACKAGE = "pygent-hello"


def _wheels() -> Path:
    """httpx (the host's version) and pip, with their dependencies, for the python image's Python (3.11).

    Kept by the requirement lines' hash in the temp directory: a rerun downloads nothing.
    """
    reqs = [f"httpx=={importlib.metadata.version('httpx')}", f"pip=={importlib.metadata.version('pip')}"]
    cache = Path(tempfile.gettempdir()) / f"pygent-test-wheels-{hashlib.sha256(' '.join(reqs).encode()).hexdigest()[:12]}"
    if not (cache / "done").exists():
        cache.mkdir(exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--dest", str(cache), "--only-binary=:all:",
                            "--python-version", "3.11", *reqs], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"pip download failed:\n{r.stderr[-3000:]}"
        (cache / "done").touch()
    return cache


def _simple_index(root: Path, wheels: Path) -> None:
    """A PEP 503 index at root/simple/: one page per project, linking its wheels."""
    projects: dict[str, list[str]] = {}
    for whl in sorted(wheels.glob("*.whl")):
        shutil.copy(whl, root / "wheels" / whl.name)
        name = re.sub(r"[-_.]+", "-", whl.name.split("-")[0]).lower()
        projects.setdefault(name, []).append(whl.name)
    for name, files in projects.items():
        page = root / "simple" / name
        page.mkdir(parents=True)
        links = "".join(f'<a href="../../wheels/{f}">{f}</a>\n' for f in files)
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")


def _git_repo(root: Path) -> None:
    """A bare repository with one commit, servable as static files (dumb HTTP)."""
    work = root / "work"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "HOME": str(root), "PATH": "/usr/bin:/bin"}
    for cmd in (["git", "init", "-q", "-b", "main", str(work)],
                ["git", "-C", str(work), "commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(cmd, check=True, env=env, capture_output=True)
    (work / "README").write_text("cloned through the egress proxy\n")
    subprocess.run(["git", "-C", str(work), "add", "README"], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "commit", "-q", "-m", "readme"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / "repo.git")], check=True, env=env)
    subprocess.run(["git", "-C", str(root / "repo.git"), "update-server-info"], check=True, env=env)
    shutil.rmtree(work)


def _npm_registry(root: Path, url: str) -> None:
    """One package in the shape npm's registry serves it: a packument and its tarball."""
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        for name, text in (("package.json", json.dumps({"name": NPM_PACKAGE, "version": "1.0.0", "main": "index.js"})),
                           ("index.js", "module.exports = 'hello from npm';\n")):
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    data = tgz.getvalue()
    pkg = root / "npm" / NPM_PACKAGE
    (pkg / "-").mkdir(parents=True)
    (pkg / "-" / f"{NPM_PACKAGE}-1.0.0.tgz").write_bytes(data)
    import base64

    dist = {"tarball": f"{url}/srv/npm/{NPM_PACKAGE}/-/{NPM_PACKAGE}-1.0.0.tgz", "shasum": hashlib.sha1(data).hexdigest(),
            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()}
    version = {"name": NPM_PACKAGE, "version": "1.0.0", "main": "index.js", "dist": dist}
    (pkg / "index.json").write_text(json.dumps({"name": NPM_PACKAGE, "dist-tags": {"latest": "1.0.0"},
                                                "versions": {"1.0.0": version}}))


@pytest.fixture(scope="module")
def hosts(docker_client, tmp_path_factory):
    root = tmp_path_factory.mktemp("egress-files")
    (root / "wheels").mkdir()
    _simple_index(root, _wheels())
    _git_repo(root)
    (root / "hello").write_text("hello file\n")
    # The servers run as uid 1000 and read the directory through a read-only bind mount.
    with egress_hosts.running(docker_client, resolve_image("python"), root) as h:
        _npm_registry(root, f"https://{h.secure}:8443")
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        yield h


def _with_ca(sb, hosts):
    sb.exec("cat > /tmp/ca.pem", stdin=hosts.cert.encode())
    return sb


@pytest.fixture(scope="module")
def py(hosts):
    with open_sandbox("python", SandboxPolicy(network=allowlist(hosts), timeout=60), pool=False) as sb:
        yield _with_ca(sb, hosts)


@pytest.fixture(scope="module")
def node(hosts, docker_client):
    image = node_image(docker_client)
    with open_sandbox(image, SandboxPolicy(network=allowlist(hosts), timeout=60), pool=False) as sb:
        yield _with_ca(sb, hosts)


def run(sb, cmd: str, timeout: float = 60):
    """The command's output and exit status, with what the proxy refused during it."""
    r = sb.exec(cmd + " 2>&1", timeout=timeout)
    return r.text, r.exit_code, [x["host"] for x in r.egress_refused]


def test_git_clones_from_an_allowed_host_and_is_refused_another(py, hosts):
    out, code, refused = run(py, f"GIT_SSL_CAINFO=/tmp/ca.pem git clone -q https://{hosts.secure}:8443/srv/repo.git /tmp/r"
                                 " && cat /tmp/r/README")
    assert code == 0 and "cloned through the egress proxy" in out and refused == [], out
    out, code, refused = run(py, "git clone -q https://denied.test/repo.git /tmp/d")
    assert code != 0 and "403" in out and refused == ["denied.test"], out


def test_urllib_pip_and_httpx(py, hosts):
    base = f"https://{hosts.secure}:8443"
    got = sandbox_json(py.exec(f"python3 - {base}/srv/hello /tmp/ca.pem", stdin=FETCH.encode()))
    assert got == {"status": 200, "body": "hello file\n"}
    assert "403" in sandbox_json(py.exec("python3 - https://denied.test/x", stdin=FETCH.encode()))["error"]
    # pip from its own wheel (the image has Python but no pip), installing httpx from the index on the allowed host.
    pip = "python3 /tmp/pip.whl/pip --disable-pip-version-check --no-cache-dir"
    out, code, _ = run(py, f"python3 -c \"import urllib.request as u, ssl, re; c=ssl.create_default_context(cafile='/tmp/ca.pem'); "
                           f"page=u.urlopen('{base}/srv/simple/pip/', context=c).read().decode(); "
                           f"name=re.search(r'>(pip-[^<]+)<', page).group(1); "
                           f"open('/tmp/pip.whl','wb').write(u.urlopen('{base}/srv/wheels/'+name, context=c).read())\"")
    assert code == 0, out
    out, code, refused = run(py, f"{pip} install -q --target /workspace/lib --cert /tmp/ca.pem --index-url {base}/srv/simple/ httpx",
                             timeout=120)
    assert code == 0 and refused == [], out
    out, code, refused = run(py, f"{pip} install --target /tmp/x --retries 1 --timeout 10 --index-url https://denied.test/simple/ httpx")
    assert code != 0 and "403" in out and refused == ["denied.test"], out
    httpx = ("PYTHONPATH=/workspace/lib python3 -c \"import httpx, sys\n"
             "try: r = httpx.get(sys.argv[1], verify='/tmp/ca.pem', timeout=20); print(r.status_code, r.text)\n"
             "except httpx.HTTPError as e: print(type(e).__name__, e)\" ")
    out, code, _ = run(py, httpx + f"{base}/srv/hello")
    assert out.strip() == "200 hello file", out
    out, code, refused = run(py, httpx + "https://denied.test/")
    assert out.startswith("ProxyError") and "403" in out and refused == ["denied.test"], out


def test_curl_npm_and_node_fetch(node, hosts):
    base = f"https://{hosts.secure}:8443"
    out, code, _ = run(node, f"curl -sS --cacert /tmp/ca.pem {base}/srv/hello")
    assert code == 0 and out == "hello file\n", out
    out, code, refused = run(node, "curl -sS https://denied.test/")
    assert code != 0 and "403" in out and refused == ["denied.test"], out
    npm = "npm --no-audit --no-fund --no-update-notifier --fetch-retries 0"
    out, code, refused = run(node, f"mkdir -p /workspace/app && cd /workspace/app && {npm} install --cafile /tmp/ca.pem "
                                   f"--registry {base}/srv/npm/ {NPM_PACKAGE} && node -p \"require('{NPM_PACKAGE}')\"",
                             timeout=120)
    assert code == 0 and out.strip().endswith("hello from npm") and refused == [], out
    out, code, refused = run(node, f"cd /workspace/app && {npm} install --registry https://denied.test/ left-pad")
    assert code != 0 and "403" in out and refused == ["denied.test"], out
    fetch = ("node -e \"fetch(process.argv[1]).then(r => r.text().then(t => console.log(r.status, t.trim())))"
             ".catch(e => { console.log('error', e.cause ? e.cause.code || e.cause.message : e.message); process.exit(1) })\" ")
    out, code, _ = run(node, f"NODE_EXTRA_CA_CERTS=/tmp/ca.pem {fetch}{base}/srv/hello")
    assert out.strip() == "200 hello file", out
    # Why the tooling's preload (NODE_OPTIONS): Debian's Node 20 ignores NODE_USE_ENV_PROXY=1 (Node 24 reads it);
    # without the preload its fetch resolves the name itself, and a sandbox has no resolver.
    assert run(node, "node -p process.versions.node")[0].startswith("20.")
    out, code, _ = run(node, f"NODE_OPTIONS= NODE_EXTRA_CA_CERTS=/tmp/ca.pem {fetch}{base}/srv/hello")
    assert out.strip() == "error EAI_AGAIN", out
    out, code, refused = run(node, fetch + "https://denied.test/")
    assert code != 0 and refused == ["denied.test"], out
