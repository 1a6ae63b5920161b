"""What a user does with the library on an engine, as one script run over each transport.

Run as `python -c <this file's text>` in the environment under test (DOCKER_HOST, TLS
variables, a docker context, another user): it needs only pygent. It prints one JSON
line: the command channel (attach), files both ways through the engine's archive API,
and the reason the engine's live event stream gives when the sandbox is killed from
outside (followed as the warm pool follows it: the engine's event *log* keeps only its
last 256 events, too few on a busy shared engine to ask afterwards).
"""

import io
import json
import os
import subprocess
import tarfile
import time

from pygent.errors import PygentError
from pygent.sandbox import open_sandbox
from pygent.sandbox.registry import get_backend

out = {}
sb = open_sandbox("minimal", pool=False)
try:
    r = sb.exec("id -u; cat", stdin=b"through stdin")
    out["exec"] = [r.exit_code, r.stdout.decode()]
    big = os.urandom(300_000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = len(big)
        tar.addfile(info, io.BytesIO(big))
    sb.put_archive("/workspace", buf.getvalue())
    back = tarfile.open(fileobj=io.BytesIO(sb.get_archive("/workspace/big.bin"))).extractfile("big.bin").read()
    out["archive_roundtrip"] = back == big
    out["sum"] = sb.exec("wc -c < /workspace/big.bin").stdout.decode().strip()
    # Killed from outside, with the docker CLI on the same endpoint: the engine's events say how.
    backend = get_backend()
    backend.follow_deaths(True)
    time.sleep(1.0)  # the event stream is open
    subprocess.run(["docker", "kill", sb.id], capture_output=True, timeout=60, check=True)
    deadline = time.monotonic() + 20
    while backend.deaths.reason(sb.id) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    out["event_reason"] = backend.deaths.reason(sb.id)
    backend.follow_deaths(False)
    try:
        sb.exec("true")
        out["after_kill"] = "still ran"
    except PygentError as exc:
        out["after_kill"] = f"{type(exc).__name__}: {exc}"
finally:
    sb.close()
print(json.dumps(out))
