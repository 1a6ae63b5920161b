"""Network by name: an allowlisted sandbox reaches its allowed hosts over HTTP(S), and nothing else.

Every host here is a container of ours on a private bridge network this module
creates (support/egress_hosts.py); the egress proxy resolves only names pinned
to it or names of those containers. Metadata and link-local addresses are shown
unreachable by the sandbox's own network configuration and by the proxy's
refusal, which comes before any connection: no packet is sent there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from pygent import Agent
from pygent.errors import ConfigError
from pygent.models import set_custom_model
from pygent.sandbox import SandboxPolicy, lifecycle, open_sandbox
from pygent.sandbox.docker import egress
from pygent.sandbox.images import resolve_image
from pygent.sandbox.registry import get_backend
from support import egress_hosts
from support.egress_hosts import CONNECT, DIRECT, FETCH, allowlist, sandbox_json
from support.scripted import call, say

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def hosts(docker_client):
    with egress_hosts.running(docker_client, resolve_image("python")) as h:
        yield h


@pytest.fixture(scope="module")
def sb(hosts):
    sandbox = open_sandbox("python", SandboxPolicy(network=allowlist(hosts), timeout=30), pool=False)
    yield sandbox
    sandbox.close()


def fetch(sb, url: str, *args: str) -> dict:
    return sandbox_json(sb.exec(f"python3 - {url} {' '.join(args)}", stdin=FETCH.encode()))


def test_allowed_host_is_reachable_over_http_and_https_connect(sb, hosts):
    assert fetch(sb, f"http://{hosts.web}:8080/plain") == {"status": 200, "body": f"hello from {hosts.web} /plain"}
    sb.exec("cat > /tmp/ca.pem", stdin=hosts.cert.encode())
    # urllib tunnels https through HTTPS_PROXY with CONNECT; the certificate is checked end to end (no interception).
    got = fetch(sb, f"https://{hosts.secure}:8443/tls", "/tmp/ca.pem")
    assert got == {"status": 200, "body": f"hello from {hosts.secure} /tls"}


def test_denied_host_gets_a_clear_403_in_what_the_command_sees(sb, hosts):
    got = fetch(sb, "http://denied.test/x")
    assert got["status"] == 403
    assert "host 'denied.test' (port 80) is not allowed" in got["body"] and "--allow-host denied.test" in got["body"]
    # An allowed name on a port not listed is denied too; HTTPS to a denied host: the CONNECT answer says why.
    assert fetch(sb, f"http://{hosts.web}:9999/")["status"] == 403
    answer = sb.exec("python3 - denied.test:443", stdin=CONNECT.encode()).text
    assert answer.startswith("HTTP/1.1 403 Forbidden") and "'denied.test' (port 443) is not allowed" in answer, answer


def test_raw_ips_and_the_gateway_are_unreachable(sb, hosts):
    for addr, port in ((hosts.web_ip, 8080), (hosts.gateway, 80)):
        direct = sb.exec(f"python3 - {addr} {port}", stdin=DIRECT.encode()).text
        assert direct.startswith("errno=101"), direct  # ENETUNREACH: no route, nothing was sent
        got = fetch(sb, f"http://{addr}:{port}/")
        assert got["status"] == 403 and "raw IP address" in got["body"], got
    answer = sb.exec(f"python3 - {hosts.web_ip}:8080", stdin=CONNECT.encode()).text
    assert answer.startswith("HTTP/1.1 403") and "raw IP address" in answer, answer


def test_link_local_metadata_and_other_sandboxes_have_no_route(sb, hosts):
    # The sandbox's whole network: loopback, no route at all (so none to 169.254.0.0/16 or any host).
    assert sb.exec("ls /sys/class/net").text.split() == ["lo"]
    routes = sb.exec("tail -n +2 /proc/net/route; grep -v ' lo$' /proc/net/ipv6_route || true").text
    assert routes.strip() == "", routes
    # An allowed name pointing at the metadata address is refused by the proxy before it connects.
    tag = hosts.web.removeprefix("web-")
    got = fetch(sb, f"http://metadata-{tag}.test/latest/meta-data/")
    assert got["status"] == 403 and "resolves to 169.254.169.254" in got["body"], got
    from pygent.sandbox.egress_proxy import Allowlist

    strict = Allowlist(["a.test", "10.0.0.0/8"])
    import ipaddress

    assert not strict.allows_address(ipaddress.ip_address("169.254.169.254"))
    assert not strict.allows_address(ipaddress.ip_address("::ffff:169.254.169.254"))
    assert not strict.allows_address(ipaddress.ip_address("fe80::1"))
    assert strict.allows_address(ipaddress.ip_address("10.1.2.3"))


def test_dns_queries_get_no_outside_answer(sb, hosts):
    name = f"exfil-{uuid.uuid4().hex}.example"
    script = (
        "import socket\n"
        f"try: print('resolved', socket.getaddrinfo({name!r}, 80))\n"
        "except OSError as e: print('no answer:', e)\n"
        "for line in open('/etc/resolv.conf'):\n"
        "    if line.startswith('nameserver'):\n"
        "        ns = line.split()[1]; s = socket.socket(socket.AF_INET6 if ':' in ns else socket.AF_INET, socket.SOCK_DGRAM)\n"
        "        s.settimeout(2)\n"
        "        try: s.sendto(b'\\x12\\x34\\x01\\x00\\x00\\x01' + bytes(6) + b'\\x05exfil\\x00\\x00\\x01\\x00\\x01', (ns, 53)); print(ns, 'answered', s.recv(512))\n"
        "        except OSError as e: print(ns, 'no answer:', e)\n"
    )
    out = sb.exec("python3 -", stdin=script.encode()).text
    assert "resolved" not in out and "answered" not in out, out
    # And the proxy resolves nothing it was not allowed to: the denial comes before any lookup.
    got = fetch(sb, f"http://{name}/")
    assert got["status"] == 403 and "is not allowed" in got["body"] and "cannot resolve" not in got["body"]


def test_rebinding_to_loopback_or_private_addresses_is_refused(sb, hosts):
    tag = hosts.web.removeprefix("web-")
    got = fetch(sb, f"http://rebind-{tag}.test:8080/")
    assert got["status"] == 403 and "resolves to 127.0.0.1" in got["body"], got
    # Without its range listed, an allowed name resolving into a private network is refused as well.
    with open_sandbox("python", SandboxPolicy(network=allowlist(hosts, private=False)), pool=False) as strict:
        got = fetch(strict, f"http://{hosts.web}:8080/")
        assert got["status"] == 403 and f"resolves to {hosts.web_ip}" in got["body"], got


def test_nothing_is_left_after_close(hosts, docker_client):
    api = docker_client.api
    policy = SandboxPolicy(network=allowlist(hosts, f"only-{uuid.uuid4().hex[:6]}.test"))  # its own proxy
    sandbox = open_sandbox("python", policy, pool=False)
    key = egress.proxy_key(policy.allow_hosts, egress.egress_settings())
    [proxy] = api.containers(filters={"label": f"{egress.LABEL_EGRESS}={key}"})
    config = api.inspect_container(proxy["Id"])
    assert config["Config"]["User"] == egress.PROXY_USER and config["HostConfig"]["ReadonlyRootfs"]
    assert config["HostConfig"]["CapDrop"] == ["ALL"] and config["HostConfig"]["PidsLimit"] == 64
    assert "no-new-privileges:true" in config["HostConfig"]["SecurityOpt"]
    sandbox.close()
    # With no sandbox holding it, the proxy exits after its linger (2 s here) and the engine removes it.
    api.wait(proxy["Id"], condition="removed", timeout=20)
    assert api.containers(all=True, filters={"label": f"{egress.LABEL_EGRESS}={key}"}) == []
    assert api.containers(all=True, filters={"id": sandbox.id}) == []


@pytest.mark.parametrize("idle_for", [1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0])
def test_a_sandbox_started_as_its_shared_proxy_idles_out_still_reaches_its_hosts(hosts, idle_for):
    """CI met it: one `pygent-runner exec --allow-host` after another, the second found the
    first's proxy in its last idle moment (linger 2 s here) and it exited under that start."""
    policy = SandboxPolicy(network=allowlist(hosts, f"idle-{uuid.uuid4().hex[:6]}.test"), timeout=30)
    open_sandbox("python", policy, pool=False).close()
    # The reaper looks once a second, so it exits 2-3 s after the close: 0.2 s apart, one of
    # these starts (~0.4 s each) overlaps its exit; before the claim one of them failed.
    time.sleep(idle_for)
    with open_sandbox("python", policy, pool=False) as sandbox:
        assert fetch(sandbox, f"http://{hosts.web}:8080/late") == {"status": 200, "body": f"hello from {hosts.web} /late"}


def test_a_claimed_proxy_outlives_its_linger_until_the_sandbox_on_its_way_arrives(hosts, docker_client):
    policy = SandboxPolicy(network=allowlist(hosts, f"claim-{uuid.uuid4().hex[:6]}.test"), timeout=30)
    open_sandbox("python", policy, pool=False).close()  # the starter's claim is settled by its holder
    engine = get_backend()
    proxy = egress.ensure_proxy(engine.client, engine.resolve_image, policy)  # found running: claimed (SIGUSR1)
    time.sleep(4.5)  # more than twice its linger with nobody holding it
    assert egress.still_running(engine.client, proxy)
    open_sandbox("python", policy, pool=False).close()  # the sandbox on its way arrives and goes
    docker_client.api.wait(proxy.id, condition="removed", timeout=20)


def test_an_agent_and_its_delegated_task_reach_only_allowed_hosts(hosts):
    cmd = lambda url: {"cmd": f"python3 - {url} <<'EOF'\n{FETCH}\nEOF"}  # noqa: E731
    policy = SandboxPolicy(network=allowlist(hosts), timeout=30)

    class Child:
        def chat(self, messages, model, tools):
            if messages[-1]["role"] == "tool":
                return say(call("stop", id="s"), content=messages[-1]["content"])
            return say(call("bash", cmd("http://denied.test/"), id="t"))

    set_custom_model(Child())
    parent_script = [
        say(call("bash", cmd(f"http://{hosts.web}:8080/agent"), id="1")),
        say(call("delegate_task", {"prompt": "fetch"}, id="2")),
        say(call("stop", id="3")),
    ]
    agent = Agent(model=type("M", (), {"chat": lambda self, m, model, tools: parent_script.pop(0)})(), policy=policy)
    try:
        agent.run_until_stop("go", max_steps=3)
        assert f"hello from {hosts.web} /agent" in agent.history[3]["content"]
        [task] = agent.tasks.wait(timeout=60)
        assert task["status"] == "finished" and "is not allowed" in task["answer"] and "403" in task["answer"], task
    finally:
        agent.close()
        set_custom_model(None)


def test_exec_allow_host_option(hosts):
    base = [sys.executable, "-m", "pygent.cli", "exec", "--allow-host", f"{hosts.web}:8080", "--allow-host", hosts.subnet, "--"]
    ok = subprocess.run([*base, "python3", "-", f"http://{hosts.web}:8080/cli"], input=FETCH.encode(), capture_output=True, timeout=60)
    assert json.loads(ok.stdout or b"{}") == {"status": 200, "body": f"hello from {hosts.web} /cli"}, (ok.stdout, ok.stderr)
    denied = subprocess.run([*base, "python3", "-", f"https://{hosts.secure}:8443/"], input=FETCH.encode(), capture_output=True, timeout=60)
    assert "403 Forbidden" in json.loads(denied.stdout or b"{}").get("error", ""), (denied.stdout, denied.stderr)


def test_an_allowlist_under_runsc_is_a_config_error_and_any_image_works(hosts):
    with pytest.raises(ConfigError, match="--network=none"):
        open_sandbox("python", SandboxPolicy(network=["a.test"], runtime="runsc"), pool=False)
    # The relay runs on the tooling volume's interpreter: an image without python (busybox) gets it too.
    with open_sandbox("minimal", SandboxPolicy(network=allowlist(hosts)), pool=False) as sb:
        assert "hello from" in sb.exec(f"wget -q -O - http://{hosts.web}:8080/minimal").text


def test_gc_removes_a_proxy_nobody_uses_and_keeps_one_in_use(sb, hosts, docker_client):
    api = docker_client.api
    settings = egress.egress_settings()
    allow = (f"stale-{uuid.uuid4().hex[:6]}.test",)
    key = egress.proxy_key(allow, settings)
    body = egress.proxy_body(resolve_image("python"), f"pygent-egress-{key}", key, allow, dict(settings, linger=600.0))
    body["Labels"][lifecycle.LABEL_CREATED] = "1000.0"  # started long ago, and never exited by itself (stuck)
    engine = get_backend()
    stale = engine.client.call("POST", "/containers/create", body, params={"name": f"pygent-egress-{key}"})["Id"]
    engine.client.call("POST", f"/containers/{stale}/start")
    in_use = egress.ensure_proxy(engine.client, engine.resolve_image, sb.policy).id  # the module's sandbox holds this one
    removed = [cid for cid, _, _ in engine.reclaim_shared()]
    assert stale in removed and in_use not in removed
    assert api.containers(all=True, filters={"id": stale}) == [] and api.containers(filters={"id": in_use})


RUN_MODEL = '''
import json, sys
from pygent import openai_compat

class Fetch:
    """Fetches the URL in argv-free form (from the task text), then stops with what it saw."""
    def chat(self, messages, model, tools):
        last = messages[-1]
        if last["role"] == "tool":
            return openai_compat.Message(role="assistant", content=last["content"], tool_calls=[openai_compat.ToolCall(
                id="s", type="function", function=openai_compat.ToolCallFunction(name="stop", arguments="{}"))])
        url = messages[1]["content"]
        cmd = "python3 - " + url + " <<'EOF'\\n" + FETCH + "\\nEOF"
        return openai_compat.Message(role="assistant", content=None, tool_calls=[openai_compat.ToolCall(
            id="t", type="function", function=openai_compat.ToolCallFunction(name="bash", arguments=json.dumps({"cmd": cmd})))])
'''


def test_run_allow_host_option(hosts, tmp_path):
    model = tmp_path / "fetch_model.py"
    model.write_text(f"FETCH = {FETCH!r}\n" + RUN_MODEL)
    argv = [sys.executable, "-m", "pygent.cli", "run", "--custom-model", f"{model}:Fetch", "--json", "--max-steps", "2",
            "--allow-host", f"{hosts.web}:8080", "--allow-host", hosts.subnet]
    out = subprocess.run([*argv, f"http://{hosts.web}:8080/run"], capture_output=True, timeout=90)
    history = json.loads(out.stdout)["history"]
    seen = [m.get("content") for m in history if m["role"] == "tool"]
    assert any(f"hello from {hosts.web} /run" in (c or "") for c in seen), (seen, out.stderr[-2000:])


def test_every_proxy_variable_is_set_and_loopback_stays_direct(sb, hosts):
    """Issue 25: both spellings, NO_PROXY covering loopback, Node's opt-in; and git (libcurl)
    reaches an allowed host through them and is refused for another."""
    env = dict(line.split("=", 1) for line in sb.exec("env").text.splitlines() if "=" in line)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[name] == "http://127.0.0.1:3128", name
    for name in ("NO_PROXY", "no_proxy"):
        assert {"localhost", "127.0.0.1", "127.0.0.0/8", "::1"} <= set(env[name].split(",")), name
    assert env["NODE_USE_ENV_PROXY"] == "1"
    assert env["NODE_OPTIONS"] == "--require /opt/pygent/node-env-proxy.cjs"  # Node before 24 (test_egress_tools.py)
    assert sb.exec("test -r /opt/pygent/node-env-proxy.cjs").exit_code == 0
    # The test host answers every path with 200 and a line of text: to git, a (dumb) repository without refs.
    allowed = sb.exec(f"git ls-remote http://{hosts.web}:8080/repo.git 2>&1; echo rc=$?", timeout=30).text
    assert allowed.strip().endswith("rc=0") and "403" not in allowed, allowed
    denied = sb.exec("git ls-remote http://denied.test/repo.git 2>&1; echo rc=$?", timeout=30).text
    assert "403" in denied and not denied.strip().endswith("rc=0"), denied
    sb.exec_background("exec python3 -m http.server 8123 --bind 127.0.0.1 -d /tmp")
    got = sb.exec("for i in $(seq 50); do python3 -c \"import urllib.request as u; "
                  "print(u.urlopen('http://127.0.0.1:8123/').status)\" 2>/dev/null && break; sleep 0.1; done", timeout=30)
    assert got.text.strip() == "200"  # loopback: not through the proxy


# ---------------------------------------------------------------- issue 25: refusals the model can act on

#: Run in a sandbox: `python3 - URL...` fetches each URL through the relay, printing only the statuses.
FETCH_ALL = r"""
import sys, urllib.error, urllib.request
for url in sys.argv[1:]:
    try:
        print(urllib.request.urlopen(url, timeout=20).status)
    except urllib.error.HTTPError as e:
        print(e.code)
"""


def fetch_all(sb, *urls: str):
    return sb.exec(f"python3 - {' '.join(urls)}", stdin=FETCH_ALL.encode(), timeout=60)


def test_each_refusal_is_reported_with_its_command_deduplicated_and_bounded(sb, hosts):
    got = fetch_all(sb, "http://denied.test/a", "http://denied.test/b", f"http://{hosts.web}:8080/ok")
    assert got.text.split() == ["403", "403", "200"]
    [refusal] = got.egress_refused  # one per host:port, with how often; the allowed host is not in it
    assert refusal["host"] == "denied.test" and refusal["port"] == 80 and refusal["reason"] == "not_allowed"
    assert refusal["count"] == 2 and f"{hosts.web}:8080" in refusal["allowed"]
    # The next command did nothing refused: it carries nothing of the last one's.
    assert fetch_all(sb, f"http://{hosts.web}:8080/ok").egress_refused == []
    # At most 5 hosts a command (just below, at and above the bound); the rest are counted.
    for n in (4, 5, 6):
        got = fetch_all(sb, *(f"http://h{i}-{n}.test/" for i in range(n)))
        assert [r["host"] for r in got.egress_refused] == [f"h{i}-{n}.test" for i in range(min(n, 5))]
        assert got.egress_refused[-1].get("others") == (1 if n == 6 else None)


def test_the_model_reads_a_note_naming_host_reason_and_how_to_allow(hosts, tmp_path):
    tag = hosts.web.removeprefix("web-")
    urls = ["http://denied.test/x", f"http://{hosts.web_ip}:8080/", f"http://rebind-{tag}.test:8080/", f"http://{hosts.web}:8080/ok"]
    cmd = lambda url: {"cmd": f"python3 - {url} <<'EOF'\n{FETCH_ALL}\nEOF"}  # noqa: E731
    script = [say(call("bash", cmd(url), id=str(i))) for i, url in enumerate(urls)] + [say(call("stop", id="s"))]
    events = []
    agent = Agent(model=type("M", (), {"chat": lambda self, m, model, tools: script.pop(0)})(),
                  policy=SandboxPolicy(network=allowlist(hosts), timeout=30), on_event=events.append, log_dir=tmp_path)
    try:
        agent.run_until_stop("go", max_steps=5)
    finally:
        agent.close()
    # A command that took over a second also ends with a `[pygent] cost:` line (format.COST_WORTH),
    # which a busy machine earns: the egress note is the last line before it.
    results = ["\n".join(line for line in m["content"].splitlines() if not line.startswith("[pygent] cost: "))
               for m in agent.history if m["role"] == "tool"]
    via = "network=[...] / --allow-host / PYGENT_ALLOW_HOSTS"
    assert results[0].endswith(
        f"[pygent] egress refused: denied.test:80 is not on the allowlist (allowed: {', '.join(sorted(allowlist(hosts)))}); "
        f"allow it with {via}"), results[0]
    assert results[1].endswith(f"[pygent] egress refused: {hosts.web_ip}:8080 is a raw IP address; only allowed host "
                               f"names are reachable: use the host's name, allowed with {via}"), results[1]
    assert results[2].endswith(f"[pygent] egress refused: rebind-{tag}.test:8080 resolves to a private address (127.0.0.1), "
                               f"refused unless its range is allowed too (e.g. 10.0.0.0/8) with {via}"), results[2]
    assert "egress refused" not in results[3] and "200" in results[3]
    refused = [(e.data["host"], e.data["reason"], e.content) for e in events if e.kind == "egress_refused"]
    assert [r[:2] for r in refused] == [("denied.test", "not_allowed"), (hosts.web_ip, "raw_ip"), (f"rebind-{tag}.test", "private")]
    assert [r[2] for r in refused] == [r.splitlines()[-1] for r in results[:3]]
    # The crash-safe run log has them too.
    [log] = tmp_path.glob("*.jsonl")
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["data"]["host"] for e in logged if e.get("kind") == "egress_refused"] == [r[0] for r in refused]


def test_run_json_transcript_lists_each_refusal(hosts, tmp_path):
    model = tmp_path / "fetch_model.py"
    model.write_text(f"FETCH = {FETCH!r}\n" + RUN_MODEL)
    argv = [sys.executable, "-m", "pygent.cli", "run", "--custom-model", f"{model}:Fetch", "--json", "--max-steps", "2",
            "--allow-host", f"{hosts.web}:8080", "--log-dir", str(tmp_path)]
    out = subprocess.run([*argv, "https://denied.test/run"], capture_output=True, timeout=90)
    record = json.loads(out.stdout)
    [refusal] = record["egress_refused"]
    assert refusal["host"] == "denied.test" and refusal["port"] == 443 and refusal["reason"] == "not_allowed"
    assert refusal["step"] == 1 and refusal["allowed"] == [f"{hosts.web}:8080"]
    assert refusal["note"] == ("[pygent] egress refused: denied.test:443 is not on the allowlist "
                               f"(allowed: {hosts.web}:8080); allow it with network=[...] / --allow-host / PYGENT_ALLOW_HOSTS")
    assert any(refusal["note"] in (m.get("content") or "") for m in record["history"] if m["role"] == "tool")
