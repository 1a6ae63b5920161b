"""`exec`'s fast path: a later run with the same configuration starts the sandbox from the
create body an earlier run remembered, without importing pydantic or docker-py, and keeps
every part of exec's contract. Real engine; each test has its own cache directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support.cli import REPO, _pids, cli_env

#: Runs `exec ARGS...` in a fresh interpreter and reports, on its last stderr line,
#: the exit status and which heavy modules the run imported.
PROBE = (
    "import json, sys\n"
    "from pygent.cli.exec import run\n"
    "code = run(sys.argv[1:])\n"
    "sys.stdout.flush()\n"
    "heavy = sorted(m for m in ('pydantic', 'pydantic_settings', 'docker', 'requests') if m in sys.modules)\n"
    "sys.stderr.write('\\n' + json.dumps({'code': code, 'heavy': heavy}) + '\\n')\n"
)


def probe(cache, *args: str, input: bytes | None = None, timeout: float = 60) -> tuple[dict, bytes, str]:
    """(report, stdout, stderr without the report line) of one exec run."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, *args], cwd=REPO, env=cli_env(XDG_CACHE_HOME=str(cache)),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    _pids.append(proc.pid)  # the suite's leak check covers these processes too
    out, err = proc.communicate(input, timeout=timeout)
    text = err.decode()
    rest, _, last = text.rstrip("\n").rpartition("\n")
    return json.loads(last), out, rest.strip()


def entry_files(cache) -> list:
    return sorted((cache / "pygent-runner" / "exec").glob("*.json"))


def test_a_second_run_skips_pydantic_and_docker_py(tmp_path):
    first, out1, _ = probe(tmp_path, "--", "echo hi")
    second, out2, _ = probe(tmp_path, "--", "echo hi")
    assert (first["code"], out1) == (0, b"hi\n")
    assert (second["code"], out2) == (0, b"hi\n")
    assert {"pydantic", "docker"} <= set(first["heavy"])
    assert second["heavy"] == [], "the fast path imported " + ", ".join(second["heavy"])
    assert len(entry_files(tmp_path)) == 1
    assert entry_files(tmp_path)[0].stat().st_mode & 0o777 == 0o600


def test_the_fast_path_keeps_exec_contract(tmp_path):
    opts = ["--memory", "64m"]  # part of the configuration: every run below shares the entry
    warm, _, _ = probe(tmp_path, *opts, "--", "true")
    assert warm["code"] == 0

    r, out, err = probe(tmp_path, *opts, "--", "echo out; echo err >&2; exit 3")
    assert (r, out, err) == ({"code": 3, "heavy": []}, b"out\n", "err")

    r, out, _ = probe(tmp_path, *opts, "--", "tr a-z A-Z", input=b"stdin passes\n")
    assert (r, out) == ({"code": 0, "heavy": []}, b"STDIN PASSES\n")

    r, out, _ = probe(tmp_path, *opts, "-e", "GREETING=hej", "-w", "/tmp", "--", 'echo "$GREETING $PWD $(id -u)"')
    assert (r, out) == ({"code": 0, "heavy": []}, b"hej /tmp 1000\n")

    r, _, _ = probe(tmp_path, *opts, "--timeout", "1", "--", "sleep 30")
    assert r == {"code": 124, "heavy": []}

    r, _, err = probe(tmp_path, *opts, "--", "python3 -c 'x = bytearray(200 << 20)'")
    assert r == {"code": 137, "heavy": []}
    assert "out of memory (limit 64m" in err


def test_a_stale_entry_falls_back_to_the_full_path(tmp_path):
    probe(tmp_path, "--", "true")
    [path] = entry_files(tmp_path)
    entry = json.loads(path.read_text())
    real_image = entry["recipe"]["body"]["Image"]
    entry["recipe"]["body"]["Image"] = "pygent/no-such-image:0"  # e.g. the image was removed since
    path.write_text(json.dumps(entry))

    r, out, err = probe(tmp_path, "--", "echo still works")
    assert (r["code"], out, err) == (0, b"still works\n", "")
    assert "docker" in r["heavy"]  # the full path ran ...
    assert json.loads(path.read_text())["recipe"]["body"]["Image"] == real_image  # ... and remembered afresh


def test_an_entry_others_could_have_written_is_not_used(tmp_path):
    probe(tmp_path, "--", "true")
    [path] = entry_files(tmp_path)
    path.chmod(0o666)
    r, out, _ = probe(tmp_path, "--", "echo hi")
    assert (r["code"], out) == (0, b"hi\n")
    assert "pydantic" in r["heavy"]


def test_a_fast_started_sandbox_has_the_full_hardening(tmp_path, monkeypatch, docker_client):
    from pygent.cli import exec as cli_exec
    from pygent.cli import exec_cache
    from pygent.sandbox.registry import get_backend

    probe(tmp_path, "--", "true")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("PYGENT_CONFIG", raising=False)
    monkeypatch.chdir(REPO)
    entry = exec_cache.load(cli_exec.parse_args(["--", "true"]))
    assert entry is not None
    sandbox = get_backend(entry["recipe"]["backend"]).start_from_recipe(entry["recipe"])
    try:
        host = docker_client.api.inspect_container(sandbox.id)["HostConfig"]
        config = docker_client.api.inspect_container(sandbox.id)["Config"]
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
        assert (host["Memory"], host["MemorySwap"], host["PidsLimit"], host["NanoCpus"]) == (512 << 20, 512 << 20, 256, 10**9)
        assert host["AutoRemove"] is True and host["Init"] is True
        assert host["LogConfig"]["Type"] == "none"
        assert config["NetworkDisabled"] is True and config["User"] == "1000:1000"
        assert config["Labels"]["io.pygent.owner-pid"] == str(os.getpid())  # this process's, not the first run's
        result = sandbox.exec("id -u; cat /proc/self/status | grep CapEff")
        assert result.stdout.split()[:1] == [b"1000"] and b"0000000000000000" in result.stdout
    finally:
        sandbox.close()  # waits until the engine has removed it
    assert docker_client.api.containers(all=True, filters={"id": sandbox.id}) == []


def test_an_upgrade_of_the_package_drops_the_entry(tmp_path):
    """Every install rewrites the distribution's METADATA: the entry records it, so a new version takes the full path."""
    from importlib.metadata import files

    [metadata] = [str(f.locate()) for f in files("pygent-runner") if f.name == "METADATA"]
    probe(tmp_path, "--", "true")
    [path] = entry_files(tmp_path)
    entry = json.loads(path.read_text())
    [dep] = [d for d in entry["deps"] if d[0] == metadata]
    dep[1] += 1  # as if an upgrade had rewritten it
    path.write_text(json.dumps(entry))
    r, out, _ = probe(tmp_path, "--", "echo hi")
    assert (r["code"], out) == (0, b"hi\n")
    assert "docker" in r["heavy"]


def test_every_sandbox_option_keys_the_cache():
    """An option added to exec is part of the cache key without anyone listing it: a new
    option can never replay a body made without it (a weaker sandbox)."""
    from pygent.cli import exec as cli_exec
    from pygent.cli import exec_cache

    base = cli_exec.parse_args(["--", "true"])
    seen = {exec_cache._key(base)}
    for name in sorted(type(base).__slots__):
        if name in exec_cache.PER_COMMAND:
            continue
        opts = cli_exec.parse_args(["--", "true"])
        setattr(opts, name, object())  # any value that differs from the default
        key = exec_cache._key(opts)
        assert key not in seen, f"option {name!r} does not change the exec cache key"
        seen.add(key)
    # and the per-command ones do not split the cache
    opts = cli_exec.parse_args(["--timeout", "5", "-e", "A=1", "-w", "/tmp", "--", "echo other"])
    assert exec_cache._key(opts) == exec_cache._key(base)
