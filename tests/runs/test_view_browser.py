"""`pygent-runner view` in a real headless Chromium (issue 26): the runs list, a run, a
folded tool result, a delegated task, a live run gaining a step, and output that tries
to be HTML/script staying text. Screenshots land in tests/artifacts/ (kept by CI as files).

The browser is Debian's chromium driven through chromedriver (scripts/ensure-browser.sh,
`make test` installs it); the viewer is the real CLI command, a uvicorn process on loopback.
"""

import json
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from support import cli
from support.scripted import call, say
from support.webdriver import Browser, free_port

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DEMO = f"{ROOT / 'examples' / 'demo_model.py'}:DemoModel"
INJECTION = ('<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
             '<a id=evil href="javascript:window.pwned=3">click</a>')
ANSI = "\x1b[31mred\x1b[0m"


class Gated:
    """A model that answers one step per release(): a run that stays live while the test looks."""

    def __init__(self) -> None:
        self.gate = threading.Semaphore(1)
        self.n = 0

    def release(self) -> None:
        self.gate.release()

    def chat(self, messages, model, tools):
        self.gate.acquire()
        self.n += 1
        if self.n >= 3:
            return say(call("stop", id="c-stop"))
        return say(call("bash", {"cmd": f"echo live-step-{self.n}"}, id=f"c{self.n}"), content=f"live {self.n}")


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    from pygent.agent import Agent

    log_dir = tmp_path_factory.mktemp("runs")
    proc = cli.popen("run", "--custom-model", DEMO, "--json", "demo with tasks", "--log-dir", str(log_dir))
    out, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, err
    long_output = "\n".join(f"line {i}" for i in range(40))
    script = [say(call("bash", {"cmd": f"printf '%s\\n' {json.dumps(INJECTION)}; printf 'ANSI \\033[31mred\\033[0m\\n'"}, id="i1"),
                  content=INJECTION + " " + ANSI),
              say(call("bash", {"cmd": f"printf '{ANSI}'; seq 1 40 | sed 's/^/line /'"}, id="i2")),
              say(call("stop", id="i3"))]

    class Injector:
        def chat(self, messages, model, tools):
            return script[sum(1 for m in messages if m["role"] == "assistant")]

    with Agent(model=Injector(), log_dir=log_dir) as agent:
        assert agent.run_until_stop("injection test").reason == "stop"
    return log_dir


@pytest.fixture(scope="module")
def viewer(logs):
    port = free_port()
    proc = cli.popen("view", str(logs), "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url + "/").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "slow"
        time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


def _run_link(browser, task_text):
    for a in browser.find_all("td.task a"):
        if browser.text(a) == task_text:
            return a
    raise AssertionError(f"no run {task_text!r} in the list")


def test_list_run_result_and_delegated_task(browser, viewer):
    browser.get(viewer + "/")
    rows = browser.find_all("#runs tbody tr")
    assert len(rows) == 2
    assert "stop" in browser.text(rows[0]) and "stop" in browser.text(rows[1])
    browser.screenshot(ARTIFACTS / "view-runs.png")
    browser.click(_run_link(browser, "demo with tasks"))
    assert len(browser.wait_for("section.step")) == 8
    assert browser.find_all("figure.waterfall svg rect.model") and browser.find_all("figure.waterfall svg rect.tool")
    browser.screenshot(ARTIFACTS / "view-run.png")
    # Follow a delegated task: its own steps, its own tool results.
    tasks = browser.find_all("a.task-link")
    assert len(tasks) == 2
    browser.click(tasks[0])
    steps = browser.wait_for("section.step")
    assert len(steps) == 2
    assert "primes below" in browser.text(browser.find("section.step details.result"))
    browser.screenshot(ARTIFACTS / "view-task.png")


def test_a_long_result_starts_folded_and_expands(browser, viewer):
    browser.get(viewer + "/?q=injection")
    browser.click(_run_link(browser, "injection test"))
    folded = browser.find("#result-2-0")
    assert browser.attribute(folded, "open") is False
    assert "line 40" not in browser.text(folded)  # hidden while folded
    browser.click(browser.find("#result-2-0 summary"))
    assert browser.attribute(folded, "open") is True
    assert "line 40" in browser.text(folded)


def test_injected_html_script_and_ansi_show_as_text(browser, viewer):
    browser.get(viewer + "/?q=injection")
    browser.click(_run_link(browser, "injection test"))
    browser.wait_for("section.step")
    assert browser.script("return window.pwned === undefined") is True
    assert browser.find_all("#steps script, #steps img, #steps a#evil, #steps a[href^=javascript]") == []
    text = browser.text(browser.find("#steps"))
    assert "<script>window.pwned=1</script>" in text  # the model's message and the command's output, as text
    assert 'href="javascript:window.pwned=3"' in text
    assert "\u241b[31mred" in text  # the ESC of the model's ANSI code is shown, not obeyed
    assert "ANSI red" in text  # the command's output reaches the log cleaned (format.clean_str): no escape left
    for a in browser.find_all("a"):
        assert not (browser.attribute(a, "href") or "").startswith("javascript:")
    browser.screenshot(ARTIFACTS / "view-injection.png")


def test_a_live_run_gains_a_step_without_reload(browser, viewer, logs):
    from pygent.agent import Agent

    model = Gated()
    agent = Agent(model=model, log_dir=logs)
    worker = threading.Thread(target=agent.run_until_stop, args=("live run",), daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while b"live-step-1" not in agent.run_log.path.read_bytes() or b'"step"' not in agent.run_log.path.read_bytes():
            assert time.monotonic() < deadline, "the first step never ended"
            time.sleep(0.1)
        browser.get(f"{viewer}/run/{agent.run_log.path.stem}")
        assert browser.text(browser.find("#status")) == "running"
        assert len(browser.find_all("section.step")) == 1
        browser.script("window.marker = 'same page'")
        model.release()  # the model answers step 2
        assert browser.wait_for("#step-2", timeout=30), "the live page never got step 2"
        assert "live-step-2" in browser.text(browser.find("#step-2"))
        assert browser.script("return window.marker") == "same page"  # no reload happened
        browser.screenshot(ARTIFACTS / "view-live.png")
    finally:
        model.release()
        model.release()
        worker.join(60)
        agent.close()


def test_only_log_files_are_served_and_pages_carry_a_strict_csp(viewer):
    page = httpx.get(viewer + "/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for bad in ("/run/..%2F..%2Fetc%2Fpasswd", "/run/.hidden", "/run/nonexistent-run"):
        assert httpx.get(viewer + bad).status_code == 404, bad


def test_view_refuses_a_missing_directory_and_a_non_loopback_address(tmp_path):
    missing = cli.run("view", str(tmp_path / "nothing-here"), timeout=30)
    assert missing.returncode == 1 and "no run logs at" in missing.stderr.decode()
    remote = cli.run("view", str(tmp_path), "--host", "0.0.0.0", timeout=30)
    assert remote.returncode == 1 and "--allow-remote" in remote.stderr.decode()
