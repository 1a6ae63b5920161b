"""Shared pieces of the benchmark: rows, statistics, targets, tables, machine info.

Nothing here asserts on timings: targets are evaluated and shown (met / missed),
never turned into a failing exit code. Every figure a table shows is also in
the JSON file (`--json`), raw samples included, so two runs can be compared.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SCHEMA = 1


# ----------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list, like numpy's default."""
    s = sorted(values)
    if not s:
        return math.nan
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(milliseconds, result) of one call."""
    t = time.perf_counter_ns()
    out = fn()
    return (time.perf_counter_ns() - t) / 1e6, out


def round_robin(
    methods: list[tuple[str, str, Callable[[], Any]]],
    rounds: int,
    warm: int,
    expect: str = "hi",
    after_warm: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """ms per call of each (key, name, fn), one call of each per round so noise hits all alike.

    `warm` uncounted rounds first, each output checked for `expect` (a path that
    prints something else is broken, not fast). Raises RuntimeError for such a path.
    """
    for _ in range(warm):
        for key, _, fn in methods:
            out = fn()
            text = out.decode() if isinstance(out, bytes) else str(out)
            if expect not in text:
                raise RuntimeError(f"{key} did not print {expect!r}: {text[:200]!r}")
    if after_warm is not None:
        after_warm()
    samples: dict[str, list[float]] = {key: [] for key, _, _ in methods}
    for _ in range(rounds):
        for key, _, fn in methods:
            ms, _ = timed(fn)
            samples[key].append(ms)
    return samples


def rss_kb() -> int:
    return proc_status("VmRSS")


def proc_status(field_name: str) -> int:
    """A kB (or count) field of /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


# ----------------------------------------------------------------------------- rows


@dataclass
class Target:
    """A goal shown next to a row: `metric op threshold`, metric 'p50', 'p95' or an extra key."""

    metric: str
    op: str  # "<=" or ">="
    threshold: float
    unit: str = "ms"

    def value(self, row: "Row") -> float | None:
        if self.metric in ("p50", "p95"):
            return getattr(row, self.metric) if row.samples else None
        v = row.extra.get(self.metric)
        return float(v) if isinstance(v, (int, float)) else None

    def met(self, row: "Row") -> bool | None:
        v = self.value(row)
        if v is None or math.isnan(v):
            return None
        return v <= self.threshold if self.op == "<=" else v >= self.threshold

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit and self.unit not in ("x",) else ("x" if self.unit == "x" else "")
        return f"{self.metric} {'≤' if self.op == '<=' else '≥'} {self.threshold:g}{unit}"


@dataclass
class Row:
    """One line of a table: timing samples (ms unless `unit` says otherwise) plus extra columns."""

    key: str
    name: str
    samples: list[float] = field(default_factory=list)
    unit: str = "ms"
    #: ratio column label -> key of the row it is divided by (same section)
    vs: dict[str, str] = field(default_factory=dict)
    #: computed by Section.finish(): label -> {"p50": x, "p95": y}
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    note: str = ""
    na: str | None = None  #: why this row could not be measured

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50) if self.samples else math.nan

    @property
    def p95(self) -> float:
        return percentile(self.samples, 95) if self.samples else math.nan

    def to_json(self) -> dict[str, Any]:
        s = self.samples
        return {
            "key": self.key,
            "name": self.name,
            "unit": self.unit,
            "n": self.n,
            "p50": _num(self.p50),
            "p95": _num(self.p95),
            "mean": _num(sum(s) / len(s)) if s else None,
            "min": _num(min(s)) if s else None,
            "max": _num(max(s)) if s else None,
            "ratios": self.ratios,
            "extra": self.extra,
            "targets": [
                {"target": t.describe(), "metric": t.metric, "op": t.op, "threshold": t.threshold,
                 "value": _num(t.value(self)), "met": t.met(self)}
                for t in self.targets
            ],
            "note": self.note,
            "na": self.na,
            "samples": [round(x, 4) for x in s],
        }


def _num(v: float | None) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(v, 4)


@dataclass
class Section:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    error: str | None = None

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def row(self, key: str) -> Row | None:
        return next((r for r in self.rows if r.key == key), None)

    def finish(self) -> None:
        for r in self.rows:
            for label, base_key in r.vs.items():
                base = self.row(base_key)
                if base is None or not base.samples or not r.samples or base.na:
                    continue
                r.ratios[label] = {"p50": _num(r.p50 / base.p50), "p95": _num(r.p95 / base.p95)}

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "elapsed_s": round(self.elapsed, 2),
            "notes": self.notes,
            "error": self.error,
            "rows": [r.to_json() for r in self.rows],
        }


# ----------------------------------------------------------------------------- display


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        a = abs(v)
        if a == 0:
            s = "0"
        elif a < 10:
            s = f"{v:.2f}"
        elif a < 1000:
            s = f"{v:.1f}"
        else:
            s = f"{v:,.0f}"
        return s
    return str(v)


def fmt_ms(v: float, unit: str) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "–"
    if unit == "ms" and v >= 10_000:
        return f"{v / 1000:.2f} s"
    return f"{fmt(v)} {unit}"


def section_table(section: Section, previous: dict[str, Any] | None = None):
    """A rich Table for one section (previous: the same section from a --compare JSON)."""
    from rich.table import Table

    table = Table(title=section.title, title_justify="left", show_lines=False, header_style="bold")
    ratio_labels: list[str] = []
    extra_keys: list[str] = []
    for r in section.rows:
        for label in r.vs:
            if label not in ratio_labels:
                ratio_labels.append(label)
        for k in r.extra:
            if k not in extra_keys and not k.startswith("_"):
                extra_keys.append(k)
    table.add_column("row", overflow="fold", max_width=60)
    table.add_column("n", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    for label in ratio_labels:
        table.add_column(label, justify="right")
    for k in extra_keys:
        table.add_column(k, justify="right")
    if previous:
        table.add_column("p50 vs prev", justify="right")
    table.add_column("target", overflow="fold")
    prev_rows = {r["key"]: r for r in (previous or {}).get("rows", [])}
    for r in section.rows:
        if r.na:
            cells = [r.name, "–", "n/a", "n/a"] + ["–"] * (len(ratio_labels) + len(extra_keys))
            if previous:
                cells.append("–")
            cells.append(f"[yellow]n/a: {r.na}[/yellow]")
            table.add_row(*cells)
            continue
        cells = [r.name + (f"\n[dim]{r.note}[/dim]" if r.note else ""), str(r.n), fmt_ms(r.p50, r.unit), fmt_ms(r.p95, r.unit)]
        for label in ratio_labels:
            ratio = r.ratios.get(label)
            cells.append(f"×{fmt(ratio['p50'])}" if ratio and ratio.get("p50") is not None else "")
        for k in extra_keys:
            cells.append(fmt(r.extra.get(k)) if k in r.extra else "")
        if previous:
            old = prev_rows.get(r.key)
            if old and old.get("p50") and r.samples:
                cells.append(f"×{r.p50 / old['p50']:.2f}")
            else:
                cells.append("")
        marks = []
        for t in r.targets:
            ok = t.met(r)
            mark = "[green]✓[/green]" if ok else ("[red]✗[/red]" if ok is False else "?")
            marks.append(f"{mark} {t.describe()}")
        cells.append("\n".join(marks))
        table.add_row(*cells)
    if section.notes or section.error:
        caption = "\n".join(section.notes)
        if section.error:
            caption = (caption + "\n" if caption else "") + f"[red]section error: {section.error}[/red]"
        table.caption = caption
        table.caption_justify = "left"
    return table


def targets_table(sections: list[Section]):
    from rich.table import Table

    table = Table(title="Targets", title_justify="left", header_style="bold")
    table.add_column("section")
    table.add_column("row")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("met")
    for s in sections:
        for r in s.rows:
            for t in r.targets:
                ok = t.met(r)
                v = t.value(r)
                table.add_row(
                    s.key, r.name.strip(" ↳"), t.describe(), fmt(v) if v is not None else "n/a",
                    "[green]yes[/green]" if ok else ("[red]no[/red]" if ok is False else "n/a"),
                )
    return table


# ----------------------------------------------------------------------------- environment


def _run(cmd: list[str], timeout: float = 10) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO).stdout.strip()
    except Exception:
        return ""


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    try:
        from importlib.metadata import version

        pygent_version = version("pygent-runner")
    except Exception:
        pygent_version = None
    dirty = _run(["git", "status", "--porcelain"])
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_mb": mem_kb // 1024,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "pygent_version": pygent_version,
        "git_commit": _run(["git", "rev-parse", "HEAD"]) or None,
        "git_dirty_files": len(dirty.splitlines()) if dirty else 0,
        "loadavg_start": list(os.getloadavg()),
    }


def docker_info() -> dict[str, Any]:
    out: dict[str, Any] = {"cli_version": _run(["docker", "version", "--format", "{{.Client.Version}}"]) or None}
    try:
        from pygent.sandbox.engine import get_client

        client = get_client()
        v = client.version()
        info = client.info()
        out.update(
            server_version=v.get("Version"),
            api_version=v.get("ApiVersion"),
            kernel=v.get("KernelVersion"),
            storage_driver=info.get("Driver"),
            cgroup_driver=info.get("CgroupDriver"),
            cgroup_version=info.get("CgroupVersion"),
            default_runtime=info.get("DefaultRuntime"),
            runtimes=sorted((info.get("Runtimes") or {}).keys()),
            ncpu=info.get("NCPU"),
            mem_total_mb=(info.get("MemTotal") or 0) // (1 << 20),
            containers_running_at_start=info.get("ContainersRunning"),
            data_root=info.get("DockerRootDir"),
        )
        from pygent.sandbox import default_policy
        from pygent.sandbox.registry import get_backend

        out["sandbox_runtime"] = get_backend().chosen_runtime(default_policy()) or info.get("DefaultRuntime")
    except Exception as exc:  # the sections will report the engine problem themselves
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def settings_info() -> dict[str, Any]:
    try:
        from pygent.settings import get_settings

        s = get_settings()
        return {
            "pygent_pool_size": s.pygent_pool_size,
            "pygent_max_tasks": s.pygent_max_tasks,
            "pygent_image": s.pygent_image,
            "pygent_runtime": s.pygent_runtime,
            "pygent_max_output": s.pygent_max_output,
        }
    except Exception as exc:
        return {"error": str(exc)[:300]}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def write_json(path: str, data: dict[str, Any]) -> None:
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(p)


# ----------------------------------------------------------------------------- observation


class Observer:
    """Time calls to existing functions without changing what they do (restored on exit).

        with Observer() as obs:
            obs.wrap(api, "start", "start", main_thread_only=True)
            ...
        obs.samples["start"]  # ms per call
    """

    def __init__(self) -> None:
        import threading

        self.samples: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._restore: list[Callable[[], None]] = []

    def wrap(self, obj: Any, attr: str, label: str, main_thread_only: bool = False) -> None:
        """Time `obj.attr` (a module function, an instance's method, or a plain function defined
        on a class). Missing attributes are skipped: the product changed, that figure is not shown."""
        import functools
        import threading

        own = attr in vars(obj)
        if isinstance(obj, type):
            original = vars(obj).get(attr)
            if not callable(original) or isinstance(original, (staticmethod, classmethod)):
                return
            real = original  # `self` arrives in *args
        else:
            if not hasattr(obj, attr):
                return
            original = vars(obj).get(attr)
            real = getattr(obj, attr)
        main = threading.main_thread()
        sink = self.samples.setdefault(label, [])
        lock = self._lock

        @functools.wraps(real)
        def wrapper(*a: Any, **kw: Any) -> Any:
            if main_thread_only and threading.current_thread() is not main:
                return real(*a, **kw)
            t = time.perf_counter_ns()
            try:
                return real(*a, **kw)
            finally:
                with lock:
                    sink.append((time.perf_counter_ns() - t) / 1e6)

        setattr(obj, attr, wrapper)
        self._restore.append((lambda: setattr(obj, attr, original)) if own else (lambda: delattr(obj, attr)))

    def clear(self) -> None:
        with self._lock:
            for v in self.samples.values():
                v.clear()

    def get(self, label: str) -> list[float]:
        with self._lock:
            return list(self.samples.get(label, []))

    def __enter__(self) -> "Observer":
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._restore):
            try:
                undo()
            except Exception:
                pass
        self._restore.clear()
