"""Section 2: a sandbox's whole life (create -> first command -> removed), and the warm pool.

The pool is refilled in the background after each acquire; every timed step
waits for the pool to be full again first, so no measurement overlaps a refill
(except 'acquire -> first command', where the refill triggered by that very
acquire is part of what a user sees).
"""

from __future__ import annotations

import time

from ..context import MIN_IMAGE, PY_IMAGE, Ctx, run_cmd, wait_pool_full
from ..core import Observer, Row, Section, Target, timed

#: Engine calls timed inside our un-pooled create/close (main thread only: not the pool's refills).
PHASES = [
    ("create_container", "API create_container"),
    ("attach_socket", "API attach"),
    ("start", "API start"),
    ("wait_hello", "server hello (after start)"),
    ("remove_container", "API remove_container (in close)"),
]


def run(ctx: Ctx, section: Section) -> None:
    from pygent.sandbox import default_policy, open_sandbox
    from pygent.sandbox.channel import Channel
    from pygent.sandbox.engine import get_client
    from pygent.sandbox.images import resolve_image
    from pygent.sandbox.pool import get_pool

    with Observer() as obs:
        api = get_client().api
        for attr, _ in PHASES:
            obs.wrap(Channel if attr == "wait_hello" else api, attr, attr, main_thread_only=True)
        _run(ctx, section, obs, default_policy, open_sandbox, resolve_image, get_pool)


def _run(ctx, section, obs, default_policy, open_sandbox, resolve_image, get_pool) -> None:
    n = ctx.n(15, 2)
    policy = default_policy()
    pool = get_pool(resolve_image("python"), policy)
    for image in (PY_IMAGE, MIN_IMAGE):  # warm the engine's image/layer caches once
        run_cmd(["docker", "run", "--rm", "--network", "none", image, "true"])
    for name in ("python", "minimal"):
        with open_sandbox(name, pool=False) as sb:
            sb.exec("true")

    def settle() -> None:
        if pool is not None:
            wait_pool_full(pool)

    cli = {PY_IMAGE: [], MIN_IMAGE: []}
    ours: dict[str, dict[str, list[float]]] = {
        name: {"total": [], "create": [], "first": [], "close": [], **{a: [] for a, _ in PHASES}}
        for name in ("python", "minimal")
    }
    acquire, acquire_first = [], []

    for _ in range(n):
        for image in (PY_IMAGE, MIN_IMAGE):
            settle()
            ms, res = timed(lambda: run_cmd(["docker", "run", "--rm", "--network", "none", image, "true"]))
            if res.returncode != 0:
                raise RuntimeError(f"docker run {image} true failed: {res.stderr.decode()[-300:]}")
            cli[image].append(ms)
        for name in ("python", "minimal"):
            settle()
            obs.clear()
            t0 = time.perf_counter()
            sb = open_sandbox(name, pool=False)
            t1 = time.perf_counter()
            sb.exec("true")
            t2 = time.perf_counter()
            sb.close()
            t3 = time.perf_counter()
            d = ours[name]
            d["create"].append((t1 - t0) * 1e3)
            d["first"].append((t2 - t1) * 1e3)
            d["close"].append((t3 - t2) * 1e3)
            d["total"].append((t3 - t0) * 1e3)
            for attr, _ in PHASES:
                d[attr].extend(obs.get(attr))
        if pool is not None:
            settle()
            t0 = time.perf_counter()
            sb = open_sandbox("python", pool=True)
            t1 = time.perf_counter()
            sb.exec("true")
            t2 = time.perf_counter()
            acquire.append((t1 - t0) * 1e3)
            acquire_first.append((t2 - t0) * 1e3)
            sb.close()

    vs_py = {"÷ docker run CLI": "cli_python"}
    section.add(Row("cli_python", f"docker run --rm --network none {PY_IMAGE} true", cli[PY_IMAGE]))
    section.add(Row("cli_minimal", f"docker run --rm --network none {MIN_IMAGE} true", cli[MIN_IMAGE]))
    for name, base in (("python", "cli_python"), ("minimal", "cli_minimal")):
        d = ours[name]
        section.add(Row(
            f"ours_{name}", f"open_sandbox('{name}', pool=False) → exec('true') → close()", d["total"],
            vs={"÷ docker run CLI": base},
        ))
        section.add(Row(f"ours_{name}_open", "  ↳ open_sandbox(pool=False)", d["create"]))
        for attr, label in PHASES[:4]:
            if d[attr]:
                section.add(Row(f"ours_{name}_{attr}", f"      ↳ {label}", d[attr]))
        section.add(Row(f"ours_{name}_first", "  ↳ first exec('true')", d["first"]))
        section.add(Row(f"ours_{name}_close", "  ↳ close()", d["close"]))
        if d["remove_container"]:
            section.add(Row(f"ours_{name}_remove", f"      ↳ {PHASES[4][1]}", d["remove_container"]))
    if pool is None:
        section.add(Row("pool_acquire", "open_sandbox('python', pool=True): acquire", na="pooling is off (PYGENT_POOL_SIZE=0)"))
        return
    section.add(Row(
        "pool_acquire", f"open_sandbox('python', pool=True): acquire (warm pool of {pool.base}+)", acquire,
        vs=vs_py, targets=[Target("p50", "<=", 1)],
    ))
    section.add(Row("pool_acquire_first", "pooled: acquire → first command done", acquire_first, vs=vs_py))
    _concurrent(ctx, section, open_sandbox, settle)
    section.notes.append(
        "↳ rows split our un-pooled row into its steps (engine calls timed in place, main thread only). "
        "The docker CLI rows include the CLI's own start-up (Go binary + API round trips)."
    )


#: Sandboxes opened at once in the concurrency rows (the epicbox comparison of issue 12).
CONCURRENT = 16


def _concurrent(ctx: Ctx, section: Section, open_sandbox, settle) -> None:
    """16 sandboxes opened, used once and closed at the same time, vs the raw container life.

    Rounds alternate (raw, pooled, cold) so load drifts hit all three alike; each row's wall
    is the median round's.
    """
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    from ..raw_engine import raw_round

    def ours(pool: bool) -> dict:
        each: list[float] = []

        def one(_: int) -> None:
            t0 = time.perf_counter()
            with open_sandbox("python", pool=pool) as sb:
                sb.exec("echo hi")
            each.append((time.perf_counter() - t0) * 1e3)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=CONCURRENT) as ex:
            list(ex.map(one, range(CONCURRENT)))
        return {"wall": time.perf_counter() - t0, "each": each}

    from pygent.sandbox.images import resolve_image

    from ..epicbox_peer import VERSION as EPICBOX, Peer

    rounds: dict[str, list[dict]] = {"raw": [], "epicbox": [], "pooled": [], "cold": []}
    try:
        peer: Peer | None = Peer(resolve_image("python"))
    except Exception as exc:  # no registry to install it from: the other rows still run
        peer = None
        section.notes.append(f"epicbox {EPICBOX} row not measured: {str(exc)[:200]}")
    raw_round(2, 2)  # warm the raw path's imports and the engine's caches
    try:
        for _ in range(ctx.n(3, 1)):
            settle()
            rounds["raw"].append(raw_round(CONCURRENT, CONCURRENT))
            if peer is not None:
                settle()
                rounds["epicbox"].append(peer.round(CONCURRENT))
            settle()
            rounds["pooled"].append(ours(True))
            settle()
            rounds["cold"].append(ours(False))
    finally:
        if peer is not None:
            peer.close()
    wall = {k: statistics.median(r["wall"] for r in v) for k, v in rounds.items() if v}
    label = f"{CONCURRENT} at once:"
    section.add(Row(
        "conc_raw", f"{label} raw create → start → echo hi → wait → remove (the backend's client, same hardening)",
        [x for r in rounds["raw"] for x in r["each"]], extra={"wall s": wall["raw"]},
    ))
    if rounds["epicbox"]:
        ep_walls = ", ".join(f"{r['wall']:.2f}" for r in rounds["epicbox"])
        ep_ok = sum(r["ok"] for r in rounds["epicbox"])
        section.add(Row(
            "conc_epicbox", f"{label} epicbox {EPICBOX} run('echo hi') (its own venv; our python image, uid 1000, no network)",
            [x for r in rounds["epicbox"] for x in r["each"]],
            extra={"wall s": wall["epicbox"], "× raw wall": wall["epicbox"] / wall["raw"]},
            note=f"walls by round: {ep_walls} s; right output {ep_ok}/{CONCURRENT * len(rounds['epicbox'])}",
        ))
    raw_walls = ", ".join(f"{r['wall']:.2f}" for r in rounds["raw"])
    for key, pool in (("pooled", True), ("cold", False)):
        walls = ", ".join(f"{r['wall']:.2f}" for r in rounds[key])
        row = section.add(Row(
            f"conc_{key}", f"{label} open_sandbox(pool={pool}) → exec('echo hi') → close()",
            [x for r in rounds[key] for x in r["each"]],
            extra={"wall s": wall[key], "× raw wall": wall[key] / wall["raw"],
                   **({"× epicbox wall": wall[key] / wall["epicbox"]} if "epicbox" in wall else {})},
            note=f"walls by round: {walls} s (raw: {raw_walls} s)",
        ))
        if pool:  # the default way to open a sandbox
            row.targets = [Target("× raw wall", "<=", 1.0, unit="x")]
    section.notes.append(
        f"{label} the pool follows bursts (PYGENT_POOL_MAX): the first round finds the pool's base "
        "size warm, later rounds find a warm sandbox for each. A cold sandbox (pool=False) costs "
        "what a raw container costs plus its command server's start (~12 ms CPU in the container), "
        "so on a CPU-bound engine it cannot beat the raw row; the pooled one does."
    )
