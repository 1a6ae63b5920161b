"""Section 7: network by name. An allowlisted sandbox's start vs a no-network one, and HTTP via the proxy vs direct.

The HTTP server is a container of ours on the engine's default bridge; the
proxy (egress network `bridge`, the default) is given its name pinned to that
container's address, and the bridge's range is allowed explicitly. The
allowlisted start is measured with the shared proxy already up (it starts
once: its first start is its own row).
"""

from __future__ import annotations

import json
import os
import time

from ..context import PY_IMAGE, Ctx
from ..core import Row, Section, Target

#: Run in the sandbox: N GETs of URL in one process, one ms figure per line.
_GETS = r"""
import sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
urllib.request.urlopen(url, timeout=20).read()  # warm: imports, first connection
for _ in range(n):
    t = time.perf_counter(); urllib.request.urlopen(url, timeout=20).read(); print((time.perf_counter() - t) * 1e3)
"""


def run(ctx: Ctx, section: Section) -> None:
    from pygent.sandbox import SandboxPolicy, lifecycle, open_sandbox
    from pygent.sandbox.engine import get_client

    n = ctx.n(15, 2)
    client = get_client()
    server = client.containers.run(
        PY_IMAGE, ["python3", "-u", "-m", "http.server", "8080", "-d", "/opt"], detach=True, auto_remove=True,
        labels=lifecycle.owner_labels(), user="1000:1000", read_only=True, cap_drop=["ALL"], network="bridge",
    )
    saved = {k: os.environ.get(k) for k in ("PYGENT_EGRESS_HOSTS", "PYGENT_EGRESS_NETWORK")}
    try:
        stream = server.attach(stdout=True, stderr=True, stream=True)
        for chunk in stream:
            if b"Serving HTTP" in chunk:
                break
        server.reload()
        bridge = server.attrs["NetworkSettings"]["Networks"]["bridge"]
        ip, subnet = bridge["IPAddress"], f"{bridge['IPAddress']}/{bridge['IPPrefixLen']}"
        os.environ["PYGENT_EGRESS_HOSTS"] = f"bench-web.test={ip}"
        os.environ["PYGENT_EGRESS_NETWORK"] = "bridge"
        allow = SandboxPolicy(network=["bench-web.test:8080", subnet])
        none = SandboxPolicy()

        def life(policy: SandboxPolicy) -> float:
            t0 = time.perf_counter()
            with open_sandbox("python", policy, pool=False) as sb:
                sb.exec("true")
            return (time.perf_counter() - t0) * 1e3

        first = life(allow)  # starts the shared proxy
        life(none)
        starts: dict[str, list[float]] = {"none": [], "allow": []}
        for _ in range(n):
            starts["none"].append(life(none))
            starts["allow"].append(life(allow))
        gets: dict[str, list[float]] = {}
        for key, policy, url in (
            ("direct", SandboxPolicy(network=True), f"http://{ip}:8080/"),
            ("proxy", allow, "http://bench-web.test:8080/"),
        ):
            with open_sandbox("python", policy, pool=False) as sb:
                r = sb.exec(f"python3 - {url} {max(n, 5) * 4}", stdin=_GETS.encode(), timeout=120)
                if r.exit_code != 0:
                    raise RuntimeError(f"{key} GETs failed: {r.stderr.decode()[-300:]}")
                gets[key] = [float(x) for x in r.text.split()]
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        try:
            server.remove(force=True)
        except Exception:
            pass

    section.add(Row("start_none", "open_sandbox(network=False) → exec('true') → close()", starts["none"]))
    ratio = Row(
        "start_allow", "open_sandbox(network=(hosts)) → exec('true') → close() (proxy shared)", starts["allow"],
        vs={"÷ no network": "start_none"}, targets=[Target("ratio_p50", "<=", 1.5, unit="x")],
    )
    p50 = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    ratio.extra["ratio_p50"] = round(p50(starts["allow"]) / p50(starts["none"]), 3)
    section.add(ratio)
    section.add(Row("start_allow_first", "  ↳ the first one, which starts the proxy", [first]))
    section.add(Row("http_direct", "HTTP GET in the sandbox, direct (network=True)", gets["direct"]))
    section.add(Row("http_proxy", "HTTP GET in the sandbox, through relay + egress proxy", gets["proxy"], vs={"÷ direct": "http_direct"}))
    section.notes.append(json.dumps({"server": "python3 -m http.server on the default bridge (ours)", "requests_per_row": len(gets["direct"])}))
