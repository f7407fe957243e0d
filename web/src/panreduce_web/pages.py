"""HTML of the pages. Every value from a job, a file or the URL is escaped here; the
scripts (static/app.js) read data from data-* attributes and JSON, never from inline code
(the Content-Security-Policy allows no inline script)."""

from __future__ import annotations

import json
import urllib.parse
from html import escape
from typing import Any

from panreduce_web.sessions import Session


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def layout(title: str, body: str, *, session: Session | None, auth: str) -> str:
    who = ""
    if session is not None and session.logged_in and auth != "none":
        who = (
            f'<form method="post" action="/logout" class="logout"><span class="who">{e(session.subject)}</span>'
            f'<input type="hidden" name="csrf" value="{e(session.csrf)}"><button>Log out</button></form>'
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)} · PaNReduce</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/style.css">
<script src="/static/plotly.min.js" defer></script><script src="/static/app.js" defer></script>
</head><body><header><a href="/" class="brand">PaNReduce</a> <span class="sub">live data</span>{who}</header>
<main>{body}</main></body></html>"""


def error(status: int, message: str) -> str:
    return f'<h1>{status}</h1><p class="error" id="error">{e(message)}</p><p><a href="/">Recent reductions</a></p>'


def login_form(csrf: str, next_path: str, problem: str = "") -> str:
    note = f'<p class="error" id="login-error">{e(problem)}</p>' if problem else ""
    return f"""<h1>Log in</h1>{note}
<form method="post" action="/login" id="login"><input type="hidden" name="csrf" value="{e(csrf)}">
<input type="hidden" name="next" value="{e(next_path)}">
<label>Gateway token <input type="password" name="token" id="token" autocomplete="off" maxlength="8192" required></label>
<button type="submit" id="login-submit">Log in</button></form>"""


COLUMNS = [
    ("technique", "Technique"),
    ("sample", "Sample"),
    ("title", "Title"),
    ("state", "State"),
    ("progress", "Progress"),
    ("created", "Created"),
    ("started", "Started"),
    ("finished", "Finished"),
    ("owner", "Who"),
    ("proposal", "Proposal"),
]


def row_html(r: dict[str, Any]) -> str:
    cells = []
    for key, _ in COLUMNS:
        v = r[key]
        if key == "progress":
            pct = round(100 * float(v))
            cells.append(f'<td><progress max="100" value="{pct}"></progress> {pct}%</td>')
        elif key == "state":
            cells.append(f'<td class="state {e(v).lower()}">{e(v)}</td>')
        else:
            cells.append(f"<td>{e(v)}</td>")
    href = "/jobs/" + urllib.parse.quote(r["id"])
    return f'<tr data-id="{e(r["id"])}"><td><a href="{e(href)}">{e(r["id"])}</a></td>{"".join(cells)}</tr>'


def job_list(
    rows: list[dict[str, Any]], filters: dict[str, str], next_page: str, techniques: list[str], states: list[str]
) -> str:
    def options(values: list[str], chosen: str) -> str:
        return '<option value="">any</option>' + "".join(
            f"<option{' selected' if v == chosen else ''}>{e(v)}</option>" for v in values
        )

    query = urllib.parse.urlencode(filters)
    nav = []
    if next_page:
        nav.append(
            f'<a id="next-page" href="/?{e(urllib.parse.urlencode({**filters, "page": next_page}))}">Next page</a>'
        )
    return f"""<h1>Recent reductions</h1>
<form method="get" action="/" class="filters" id="filters">
<label>Technique <input name="technique" list="techniques" value="{e(filters.get("technique", ""))}" maxlength="64"></label>
<datalist id="techniques">{"".join(f'<option value="{e(t)}">' for t in techniques)}</datalist>
<label>State <select name="state">{options(states, filters.get("state", ""))}</select></label>
<label>Sample <input name="sample" value="{e(filters.get("sample", ""))}" maxlength="128"></label>
<label>From <input type="date" name="since" value="{e(filters.get("since", ""))}"></label>
<label>To <input type="date" name="until" value="{e(filters.get("until", ""))}"></label>
<button>Filter</button></form>
<table id="jobs" data-live="/events/jobs?{e(query)}"><thead><tr><th>Job</th>{"".join(f"<th>{e(c)}</th>" for _, c in COLUMNS)}</tr></thead>
<tbody>{"".join(row_html(r) for r in rows)}</tbody></table>
<p id="empty" {"hidden" if rows else ""}>No reductions yet.</p>
<nav class="pages"><a href="/?{e(query)}">First page</a> {" ".join(nav)}</nav>"""


def _table(d: dict[str, Any], ident: str) -> str:
    if not d:
        return f'<p id="{ident}" class="none">none</p>'
    rows = "".join(
        f"<tr><th>{e(k)}</th><td>{e(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
        for k, v in sorted(d.items())
    )
    return f'<table id="{ident}" class="kv">{rows}</table>'


def event_html(ev: dict[str, Any]) -> str:
    text = ev.get("message", "")
    if ev.get("kind") == "progress":
        text = f"{ev.get('stage', '')} {round(100 * float(ev.get('fraction', 0)))}% {text}"
    return f'<li class="{e(ev.get("kind"))}"><span class="t">{e(ev.get("time"))}</span> {e(ev.get("kind"))}: {e(text)}</li>'


def job_page(
    job: dict[str, Any],
    params: dict[str, Any],
    catalogue: dict[str, str],
    summary: dict[str, Any],
    outputs: list[dict[str, Any]],
    events: list[dict[str, Any]],
    csrf: str,
    failure: dict[str, Any],
) -> str:
    jid = urllib.parse.quote(job["id"])
    cancel = ""
    if job["cancellable"]:
        cancel = (
            f'<form method="post" action="/jobs/{e(jid)}/cancel" id="cancel-form">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}"><button id="cancel">Cancel</button></form>'
        )
    outs = []
    for o in outputs:
        base = f"/jobs/{jid}/outputs/{o['n']}"
        outs.append(
            f'<li><a class="download" href="{e(base)}" download>{e(o["name"])}</a> '
            f'<span class="fmt">{e(o["format"])} {e(o["role"])} {int(o["size"])} bytes</span> '
            f'<a class="view" href="{e(base)}/view">view</a>'
            f'<div class="plots" data-plots="{e(base)}/plots"></div></li>'
        )
    fail = (
        f'<p class="error" id="failure">{e(failure.get("code", ""))}: {e(failure.get("message", ""))}</p>'
        if failure
        else ""
    )
    pct = round(100 * float(job["progress"]))
    return f"""<h1>Job <span id="job-id">{e(job["id"])}</span></h1>
<p><span class="state {e(job["state"]).lower()}" id="state">{e(job["state"])}</span>
<progress id="progress" max="100" value="{pct}"></progress> <span id="stage">{e(job["stage"])}</span> {cancel}</p>
{fail}
<table class="kv" id="job"><tr><th>technique</th><td>{e(job["technique"])}</td></tr>
<tr><th>sample</th><td>{e(job["sample"])}</td></tr><tr><th>title</th><td>{e(job["title"])}</td></tr>
<tr><th>proposal</th><td>{e(job["proposal"])}</td></tr><tr><th>who</th><td>{e(job["owner"])}</td></tr>
<tr><th>created</th><td>{e(job["created"])}</td></tr><tr><th>started</th><td>{e(job["started"])}</td></tr>
<tr><th>finished</th><td id="finished">{e(job["finished"])}</td></tr></table>
<h2>Parameters</h2>{_table(params, "parameters")}
<h2>Catalogue</h2>{_table(catalogue, "catalogue")}
<h2>Summary</h2>{_table(summary, "summary")}
<h2>Outputs</h2><ul id="outputs">{"".join(outs) or "<li>none yet</li>"}</ul>
<h2>Events</h2><ol id="events" data-live="{"" if job["cancellable"] is False else f"/jobs/{e(jid)}/events"}">{"".join(event_html(ev) for ev in events)}</ol>"""


def view_page(job_id: str, n: int, name: str) -> str:
    base = f"/jobs/{urllib.parse.quote(job_id)}/outputs/{n}"
    return f"""<h1>{e(name)}</h1><p><a href="/jobs/{e(urllib.parse.quote(job_id))}">job {e(job_id)}</a> ·
<a class="download" href="{e(base)}" download>download</a> · <a href="{e(base)}/metadata">metadata</a></p>
<div class="plots big" data-plots="{e(base)}/plots"></div>"""
