"""What a user does with the library on an engine, as one script run over each transport.

Run as `python -c <this file's text>` in the environment under test (DOCKER_HOST, TLS
variables, a docker context, another user): it needs only pygent. It prints one JSON
line: the command channel (attach), files both ways through the engine's archive API,
and the reason the engine's events give when the sandbox is killed from outside.
"""

import io
import json
import os
import subprocess
import tarfile

from pygent.errors import PygentError
from pygent.sandbox import open_sandbox

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
    subprocess.run(["docker", "kill", sb.id], capture_output=True, timeout=60, check=True)
    try:
        sb.exec("true")
        out["after_kill"] = "still ran"
    except PygentError as exc:
        out["after_kill"] = f"{type(exc).__name__}: {exc}"
finally:
    sb.close()
print(json.dumps(out))
