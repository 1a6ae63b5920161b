"""PYGENT_MAX_TASKS bounds task containers, counted the way the engine counts them (issue 27).

A slot used to be freed when a task's loop ended, before its container was
removed, so under load a fifth container could start beside four. Here a child
process floods 60 delegated tasks with PYGENT_MAX_TASKS=4 (warm pool off, so
every container of that process is a task's), while this process samples the
engine's containers with the child's owner label every 20 ms: never more than 4.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support.engine import owned_by

TESTS = Path(__file__).resolve().parents[1]
MAX_TASKS = 4


def _flood(api, kinds: list[str]) -> tuple[int, collections.Counter]:
    """Run the flood in a child; (most containers seen at once, statuses by count)."""
    env = dict(os.environ, PYGENT_MAX_TASKS=str(MAX_TASKS), PYGENT_POOL_SIZE="0", PYTHONPATH=str(TESTS))
    child = subprocess.Popen([sys.executable, "-m", "support.task_flood", ",".join(kinds)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    most, samples = 0, 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal most, samples
        while not stop.is_set():
            most = max(most, len(owned_by(api, child.pid)))
            samples += 1
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, err = child.communicate(timeout=280)
    finally:
        stop.set()
        watcher.join()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err[-3000:]
    assert samples > 20, "the watcher barely sampled"
    assert not owned_by(api, child.pid), "the flood left containers behind"
    statuses = json.loads(out.strip().splitlines()[-1])
    assert len(statuses) == len(kinds)
    return most, collections.Counter(s["status"] for s in statuses)


@pytest.mark.timeout(300)
def test_a_flood_of_60_tasks_never_has_more_than_max_tasks_containers(api):
    most, statuses = _flood(api, ["finish"] * 60)
    assert statuses == {"finished": 60}, statuses
    assert 2 <= most <= MAX_TASKS, f"{most} task containers existed at once (max_tasks={MAX_TASKS})"


@pytest.mark.timeout(300)
def test_the_bound_holds_with_a_cpu_burner_beside_it(api):
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        most, statuses = _flood(api, ["finish"] * 60)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert statuses == {"finished": 60}, statuses
    assert 2 <= most <= MAX_TASKS, f"{most} task containers existed at once under load (max_tasks={MAX_TASKS})"


@pytest.mark.timeout(300)
def test_the_bound_holds_on_the_failed_timeout_cancel_and_lost_paths(api):
    kinds = ["finish", "fail", "timeout", "cancel", "lost"] * 12
    most, statuses = _flood(api, kinds)
    assert statuses == {"finished": 12, "failed": 12, "timeout": 12, "cancelled": 12, "lost": 12}, statuses
    assert 2 <= most <= MAX_TASKS, f"{most} task containers existed at once (max_tasks={MAX_TASKS})"
