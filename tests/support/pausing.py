"""One check both the local and the Ray pause tests make: a command timed across a pause."""

import threading
import time


def exec_across_a_pause(sb, docker_client, frozen: float, before: float = 0.2):
    """Run `sleep 1; echo ok` with a 2 s timeout, pause the sandbox for `frozen` s (longer than the
    timeout) while it runs, resume it, and return the command's result: paused time must not count."""
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=sb.exec("sleep 1; echo ok", timeout=2)))
    worker.start()
    time.sleep(before)
    sb.pause()
    assert sb.paused and docker_client.api.inspect_container(sb.id)["State"]["Status"] == "paused"
    time.sleep(frozen)
    sb.resume()
    worker.join(30)
    assert not sb.paused
    return result["r"]
