"""The view's HTML: the runs list, one run (steps, tool calls, task tree, waterfall).

Why hand-written and escaped at one place (`t()`): every byte of a log may come from
a model or a command, so everything shown goes through html.escape and control
characters become visible symbols (an ANSI escape shows as ␛[31m, never colours).
Links are built here from ids checked by the reader, never taken from a log. The
pages read fine without JS: long results fold with <details>, paging is links.
"""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any
from urllib.parse import quote

from .reader import RunSummary, Step, TaskNode

__all__ = ["runs_page", "run_page", "step_html", "PAGE_STEPS"]

PAGE_STEPS = 50
_LONG = 600  #: characters beyond which a tool result starts folded
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def t(text: Any) -> str:
    """Any value as HTML text: escaped, control characters shown as symbols (␛ for ESC)."""
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, default=str)
    s = _CONTROLS.sub(lambda m: chr(0x2400 + ord(m.group())) if ord(m.group()) < 32 else "\u2421", s)
    return html.escape(s, quote=True)


def _page(title: str, body: str, live: str | None = None) -> str:
    attrs = f' data-live="{t(live)}"' if live else ""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{t(title)}</title><link rel=stylesheet href=/static/view.css>"
            f"<script src=/static/view.js defer></script></head><body{attrs}>"
            f"<header><a href=/>pygent runs</a></header><main>{body}</main></body></html>")


def _secs(value: float | None) -> str:
    return "" if value is None else (f"{value:.2f}s" if value < 60 else f"{value / 60:.1f}min")


def runs_page(runs: list[RunSummary], q: str, status: str, page: int, per_page: int, total: int) -> str:
    statuses = ("", "running", "stop", "crashed", "error", "max_steps", "max_time")
    options = "".join(f"<option value='{t(s)}'{' selected' if s == status else ''}>{t(s or 'any status')}</option>" for s in statuses)
    rows = "".join(
        f"<tr class='run {t(r.status)}'><td class=status>{t(r.status)}</td>"
        f"<td class=task><a href='/run/{quote(r.id)}'>{t(r.task[:200] or '(no task)')}</a></td>"
        f"<td>{t(r.model)}</td><td class=num>{r.steps}</td><td class=num>{_secs(r.duration)}</td>"
        f"<td class=num>{r.tokens}</td><td>{t(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.started)))}</td></tr>"
        for r in runs)
    pages = _pager(f"/?q={quote(q)}&status={quote(status)}&page=", page, (total + per_page - 1) // per_page)
    body = (f"<h1>Runs</h1><form method=get class=filter><input name=q id=q value='{t(q)}' placeholder='search tasks'>"
            f"<select name=status>{options}</select><button>filter</button></form>"
            f"<p class=count>{total} run(s)</p>"
            "<table id=runs><thead><tr><th>status</th><th>task</th><th>model</th><th>steps</th><th>duration</th>"
            f"<th>tokens</th><th>started</th></tr></thead><tbody>{rows}</tbody></table>{pages}")
    return _page("pygent runs", body)


def _pager(prefix: str, page: int, pages: int) -> str:
    if pages <= 1:
        return ""
    links = []
    if page > 1:
        links.append(f"<a rel=prev href='{prefix}{page - 1}'>← newer</a>")
    links.append(f"<span>page {page} of {pages}</span>")
    if page < pages:
        links.append(f"<a rel=next href='{prefix}{page + 1}'>older →</a>")
    return f"<nav class=pager>{' '.join(links)}</nav>"


def step_html(step: Step) -> str:
    """One step: the model's message, then each tool call with its arguments and result."""
    parts = [f"<section class=step id='step-{step.n}' data-n='{step.n}'><h3>step {step.n}"
             f" <small>{_secs(step.end - step.start)}</small></h3>"]
    model = step.model or {}
    usage = (model.get("data") or {}).get("usage") or {}
    error = (model.get("data") or {}).get("error")
    parts.append(f"<p class=model>model {_secs(model.get('duration'))}"
                 f"{' · ' + t(usage.get('total_tokens')) + ' tokens' if usage.get('total_tokens') else ''}</p>")
    if error:
        parts.append(f"<pre class=error>{t(error)}</pre>")
    if step.assistant and step.assistant.get("content"):
        parts.append(f"<div class=assistant><pre>{t(step.assistant['content'])}</pre></div>")
    for i, tool in enumerate(step.tools):
        content = tool.get("content") or ""
        cost = (tool.get("data") or {}).get("cost")
        cost_text = (f" · cpu {cost['cpu_user'] + cost['cpu_sys']:.2f}s · peak {cost['max_rss'] / 1e6:.0f} MB" if cost else "")
        folded = len(content) > _LONG or content.count("\n") > 12
        parts.append(
            f"<div class=tool><p class=call><b>{t(tool.get('tool') or '')}</b> <small>{_secs(tool.get('duration'))}{cost_text}</small></p>"
            f"<pre class=args>{t(tool.get('arguments') or '')}</pre>"
            f"<details class=result id='result-{step.n}-{i}'{'' if folded else ' open'}><summary>result"
            f" ({content.count(chr(10)) + 1} lines, {len(content)} chars)</summary><pre>{t(content)}</pre></details></div>")
    for other in step.other:
        parts.append(f"<p class=event><b>{t(other.get('kind'))}</b> {t(other.get('content') or '')} {t(other.get('data') or '')}</p>")
    parts.append("</section>")
    return "".join(parts)


def _tree(nodes: list[TaskNode], run_id: str, path: list[str]) -> str:
    if not nodes:
        return ""
    items = []
    for node in nodes:
        here = [*path, node.task_id]
        info = node.info
        href = f"/run/{quote(run_id)}?task={quote('/'.join(here))}"
        items.append(f"<li><a class=task-link href='{href}'>{t(node.task_id)}</a> <span class='status {t(info.get('status'))}'>"
                     f"{t(info.get('status'))}</span> {t(info.get('steps'))} steps · {_secs(info.get('elapsed'))}"
                     f"{_tree(node.children, run_id, here)}</li>")
    return f"<ul class=tasks>{''.join(items)}</ul>"


def waterfall(steps: list[Step]) -> str:
    """An SVG of where the time went: per step a row, the model call and each tool call as bars."""
    if not steps:
        return ""
    t0 = min(s.start for s in steps)
    span = max(max(s.end for s in steps) - t0, 1e-6)
    width, row = 800, 14
    bars = []
    model_total = tool_total = 0.0
    for i, s in enumerate(steps):
        y = i * row
        m = s.model or {}
        md = float(m.get("duration") or 0.0)
        model_total += md
        x = (s.start - t0) / span * width
        bars.append(f"<rect class=model x='{x:.1f}' y='{y}' width='{max(md / span * width, 1):.1f}' height='{row - 3}'>"
                    f"<title>step {s.n}: model {md:.3f}s</title></rect>")
        for tool in s.tools:
            d = float(tool.get("duration") or 0.0)
            tool_total += d
            end = float(tool.get("t") or 0.0)
            bars.append(f"<rect class=tool x='{(end - d - t0) / span * width:.1f}' y='{y}' width='{max(d / span * width, 1):.1f}'"
                        f" height='{row - 3}'><title>step {s.n}: {t(tool.get('tool'))} {d:.3f}s</title></rect>")
    height = len(steps) * row
    return (f"<figure class=waterfall><figcaption>time: model {_secs(model_total)}, tools {_secs(tool_total)}"
            f" <span class=key-model>■ model</span> <span class=key-tool>■ tools</span></figcaption>"
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}'"
            f" role=img aria-label='waterfall'>{''.join(bars)}</svg></figure>")


def run_page(run: RunSummary, steps: list[Step], tasks: list[TaskNode], task_path: list[str], page: int,
             live: str | None) -> str:
    pages = max(1, (len(steps) + PAGE_STEPS - 1) // PAGE_STEPS)
    shown = steps[(page - 1) * PAGE_STEPS: page * PAGE_STEPS]
    where = f" › task {'/'.join(task_path)}" if task_path else ""
    crumbs = "".join(f" › <a href='/run/{quote(run.id)}?task={quote('/'.join(task_path[:i + 1]))}'>{t(p)}</a>"
                     for i, p in enumerate(task_path))
    task_q = f"task={quote('/'.join(task_path))}&" if task_path else ""
    body = (f"<h1><a href='/run/{quote(run.id)}'>{t(run.task[:200] or run.id)}</a>{crumbs}</h1>"
            f"<p class=meta><span class='status {t(run.status)}' id=status>{t(run.status)}</span> · {t(run.model)} · "
            f"{run.steps} steps · {_secs(run.duration)} · {run.tokens} tokens</p>"
            + (f"<h2>delegated tasks</h2>{_tree(tasks, run.id, task_path)}" if tasks else "")
            + waterfall(shown)
            + f"<h2>steps{t(where)}</h2>{_pager(f'/run/{quote(run.id)}?{task_q}page=', page, pages)}"
            + f"<div id=steps>{''.join(step_html(s) for s in shown)}</div>"
            + _pager(f"/run/{quote(run.id)}?{task_q}page=", page, pages))
    return _page(f"run {run.id}", body, live)
