"""The HTML report (``--rollout-html PATH``): one self-contained file, readable offline.

Per test: charts over time of the rate held, the error rate and the latency
quantiles, with the phases shaded, the replica events marked and the SLO
bounds drawn; the verdict table; the error budget when the marker declares
``availability``; and the exact PromQL behind every number, so a failure can
be checked again in Prometheus by hand.

Built from the JSON report's records (pure: no Prometheus needed), with
matplotlib drawing each chart as inline SVG (``pip install
'pytest-rollout[html]'``).
"""

from __future__ import annotations

import html
import io
import os
import time
from collections.abc import Sequence
from typing import Any

from pytest_rollout.errors import RolloutUsageError
from pytest_rollout.judge.verdict import slo_name
from pytest_rollout.numeric import number_or_none

__all__ = ["render_html", "write_html"]

PHASE_COLOURS = {"ramp": "#fdf2d0", "baseline": "#e3f0fb", "upgrade": "#fde2e0", "after": "#e4f5e4"}
EVENT_COLOURS = {"ready": "#2b8a3e", "start": "#1971c2", "out": "#e8590c", "exit": "#c92a2a", "failed": "#c92a2a"}

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #212529; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2.5rem; border-top: 1px solid #dee2e6; padding-top: 1rem; }
.badge { display: inline-block; padding: .1rem .5rem; border-radius: .3rem; color: #fff; font-size: .85rem; }
.passed { background: #2b8a3e; } .slo_broken { background: #c92a2a; } .not_proven { background: #e67700; }
.test_failed { background: #495057; }
table { border-collapse: collapse; margin: .5rem 0 1rem; } td, th { border: 1px solid #dee2e6; padding: .2rem .5rem; }
th { background: #f1f3f5; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.broken td { background: #fff5f5; } tr.not_proven td { background: #fff9db; } pre { background: #f8f9fa; padding: .5rem; overflow-x: auto; font-size: 12px; }
.failure { white-space: pre-wrap; background: #fff5f5; border-left: 4px solid #c92a2a; padding: .5rem; }
figure { margin: 0; } svg { max-width: 100%; height: auto; }
"""

# Counts what rendered, so a headless browser (and a person) can tell the page is whole.
_SCRIPT = """
document.addEventListener("DOMContentLoaded", function () {
  var charts = document.querySelectorAll("figure.chart svg").length;
  document.body.dataset.charts = String(charts);
  document.body.dataset.ready = "1";
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 2) -> str:
    if number_or_none(value) is None:
        return "n/a"
    if isinstance(value, float) and abs(value) < 0.01 and value != 0:
        return f"{value:.5f}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _digits(v: dict[str, Any]) -> int:
    """Fractions (error rate, availability) need five decimals; rates and milliseconds two."""
    return 5 if v.get("kind") in ("error_rate", "availability") or v.get("slo") == "regression:error_rate" else 2


def _chart(record: dict[str, Any]) -> str:
    """Three stacked charts (rate, error rate, latency) over the run, as inline SVG."""
    from matplotlib.figure import Figure

    series = record.get("series") or {}
    phases = record.get("phases") or {}
    starts = [p["start"] for p in phases.values() if p.get("start")]
    if not starts or not series:
        return "<p>No time series: Prometheus could not be read at the end of the run.</p>"
    t0 = min(starts)
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)

    def points(name: str) -> tuple[list[float], list[float]]:
        pts = (series.get(name) or {}).get("points") or []
        return [t - t0 for t, _ in pts], [v for _, v in pts]

    rate_ax, err_ax, lat_ax = axes
    x, y = points("rps")
    rate_ax.plot(x, y, color="#1971c2", label="requests/s (as they complete)")
    rps = record.get("requested_rps") or 0
    rate_ax.axhline(rps, color="#495057", linestyle="--", linewidth=1, label=f"asked {rps:,.0f} rps")
    rate_ax.set_ylabel("requests / s")
    x, y = points("error_rate")
    err_ax.plot(x, [v * 100 for v in y], color="#c92a2a", label="error rate")
    latency_bounds = []
    for v in record.get("verdicts") or []:
        if v.get("kind") == "error_rate" and v.get("bound") is not None:
            err_ax.axhline(v["bound"] * 100, color="#c92a2a", linestyle=":", linewidth=1)
        if v.get("kind") == "latency" and v.get("bound") is not None:
            latency_bounds.append((v["slo"], v["bound"]))
    err_ax.set_ylabel("errors (%)")
    for name, colour in (("p50_ms", "#74c0fc"), ("p90_ms", "#4dabf7"), ("p99_ms", "#1864ab")):
        x, y = points(name)
        if x:
            lat_ax.plot(x, y, color=colour, label=name.replace("_ms", ""))
    for slo, bound in sorted(set(latency_bounds)):
        lat_ax.axhline(bound, color="#862e9c", linestyle=":", linewidth=1, label=f"{slo} bound {bound:g} ms")
    lat_ax.set_ylabel("latency (ms)")
    lat_ax.set_xlabel("seconds since the run started")
    for ax in axes:
        for name, p in phases.items():
            if p.get("start") is None or p.get("end") is None:
                continue
            ax.axvspan(p["start"] - t0, p["end"] - t0, color=PHASE_COLOURS.get(name, "#f1f3f5"), zorder=0)
        for event in record.get("events") or []:
            marker = EVENT_COLOURS.get(event["action"])
            if marker and event["at"] >= t0:
                ax.axvline(event["at"] - t0, color=marker, linewidth=0.6, alpha=0.7, zorder=1)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    for name, p in phases.items():
        if p.get("start") is not None and p.get("end") is not None:
            rate_ax.text(
                (p["start"] + p["end"]) / 2 - t0, 1.01, name, transform=rate_ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=9,
            )  # fmt: skip
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return '<figure class="chart">' + svg[svg.index("<svg") :] + "</figure>"


def _verdict_table(record: dict[str, Any]) -> str:
    rows = []
    for v in record.get("verdicts") or []:
        outcome = v.get("outcome") or ("held" if v["passed"] else "broken")
        cls = "" if outcome == "held" else f' class="{_e(outcome)}"'
        digits = _digits(v)
        interval = v.get("interval")
        ci = (
            f"[{_num(interval[0], digits)}, {_num(interval[1], digits) if interval[1] is not None else 'inf'}]"
            if interval
            else ""
        )
        rows.append(
            f"<tr{cls}><td>{_e(slo_name(str(v['slo']), v.get('route')))}</td><td>{_e(v['phase'])}</td>"
            f"<td class=num>{_num(v.get('measured'), digits)}</td><td class=num>{ci}</td>"
            f"<td>{_e(v.get('op', ''))} {_num(v.get('bound'), digits)}</td><td>{_e(outcome.replace('_', ' '))}</td>"
            f"<td>{_e(v.get('reason', ''))}</td></tr>"
        )
    if not rows:
        return "<p>No verdict.</p>"
    head = (
        "<tr><th>SLO</th><th>phase</th><th>measured</th><th>95% interval</th><th>bound</th><th>outcome</th>"
        "<th>why</th></tr>"
    )
    return f'<table class="verdicts">{head}{"".join(rows)}</table>'


def _phase_table(record: dict[str, Any]) -> str:
    """Each phase's counts; in a mix of several routes each route's own under its phase, with its outcome."""
    phases = record.get("phases") or {}
    mix = any(p.get("routes") for p in phases.values())
    rows = []
    for name, p in phases.items():
        rows.append(
            f"<tr><td>{_e(name)}</td><td class=num>{_num(p.get('achieved_rps'), 0)}</td>"
            f"<td class=num>{_num(p.get('requests'))}</td><td class=num>{_num(p.get('errors'))}</td>"
            f"<td class=num>{_num(p.get('error_rate'), 5)}</td><td class=num>{_num(p.get('p50_ms'))}</td>"
            f"<td class=num>{_num(p.get('p99_ms'))}</td><td class=num>{_num(p['end'] - p['start'], 1)}</td>"
            + ("<td>whole (the routes decide)</td>" if mix else "")
            + "</tr>"
        )
        for route, r in (p.get("routes") or {}).items():
            outcome = str(r.get("outcome") or "not judged")
            cls = "" if outcome == "held" else f' class="{_e(outcome)}"'
            rows.append(
                f"<tr{cls}><td>&nbsp;&nbsp;route {_e(route)}</td><td class=num>{_num(r.get('achieved_rps'), 0)}</td>"
                f"<td class=num>{_num(r.get('requests'))}</td><td class=num>{_num(r.get('errors'))}</td>"
                f"<td class=num>{_num(r.get('error_rate'), 5)}</td><td class=num>{_num(r.get('p50_ms'))}</td>"
                f"<td class=num>{_num(r.get('p99_ms'))}</td><td></td><td>{_e(outcome.replace('_', ' '))}</td></tr>"
            )
    head = (
        "<tr><th>phase</th><th>held rps</th><th>requests</th><th>errors</th><th>error rate</th>"
        "<th>p50 ms</th><th>p99 ms</th><th>seconds</th>" + ("<th>outcome</th>" if mix else "") + "</tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>" if rows else ""


def _budget_table(record: dict[str, Any]) -> str:
    budget = record.get("error_budget")
    if not budget:
        return ""
    rows = []
    for name, b in budget["phases"].items():
        spent = "n/a" if b["spent"] is None else f"{b['spent']:.1%}"
        burn = "n/a" if b["burn_rate"] is None else f"{b['burn_rate']:.2f}"
        rows.append(f"<tr><td>{_e(name)}</td><td class=num>{_num(b['errors'], 0)}</td><td class=num>{spent}</td>"
                    f"<td class=num>{burn}</td></tr>")  # fmt: skip
    total = "n/a" if budget.get("spent") is None else f"{budget['spent']:.1%}"
    return (
        f"<h3>Error budget (availability {budget['availability']:g}: {budget['budget_requests']:,.0f} failed "
        f"requests allowed over the run; {total} spent)</h3><table><tr><th>phase</th><th>errors</th>"
        f"<th>budget spent</th><th>burn rate</th></tr>{''.join(rows)}</table>"
    )


def _queries(record: dict[str, Any]) -> str:
    lines = []
    for name, p in (record.get("phases") or {}).items():
        for key, expr in (p.get("queries") or {}).items():
            lines.append(f"{name:9} {key:14} {expr}")
        for route, r in (p.get("routes") or {}).items():
            for key, expr in (r.get("queries") or {}).items():
                lines.append(f"{name:9} {route}: {key} {expr}")
    for name, s in (record.get("series") or {}).items():
        lines.append(f"{'chart':9} {name:14} {s.get('query', '')}")
    text = "\n".join(lines) or "(none)"
    return f"<details><summary>PromQL behind every number</summary><pre>{_e(text)}</pre></details>"


def render_html(records: Sequence[dict[str, Any]], title: str = "pytest-rollout report") -> str:
    """The whole report for *records* (the JSON report's ``tests``)."""
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(title)}</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>{_e(title)}</h1><p>{len(records)} SLO test(s), written {_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}.</p>",
    ]
    for record in records:
        result = record.get("result") or ("passed" if record.get("passed") else "not_proven")
        parts.append(
            f'<section class="test"><h2>{_e(record["nodeid"])} <span class="badge {_e(result)}">{_e(result)}</span></h2>'
            f"<p>asked {record.get('requested_rps', 0):,.0f} rps on platform {_e(record.get('platform'))}, "
            f"{record.get('workers', 0)} worker(s), engine {_e(record.get('engine'))}, run {_e(record.get('run_id'))}</p>"
        )
        if record.get("failure"):
            parts.append(f'<div class="failure">{_e(record["failure"])}</div>')
        if record.get("rollback"):
            parts.append(f'<div class="failure">rollback_on_breach: {_e(record["rollback"])}</div>')
        if record.get("comparison"):
            parts.append(f"<pre>{_e(chr(10).join(record['comparison'].get('lines', [])))}</pre>")
        parts.append(_chart(record))
        parts.append(_phase_table(record))
        parts.append(_verdict_table(record))
        if (record.get("risk") or {}).get("sentence"):
            parts.append(f'<p class="risk">The gate\'s own risk: {_e(record["risk"]["sentence"])}.</p>')
        parts.append(_budget_table(record))
        parts.append(_queries(record))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(path: str | os.PathLike[str], records: Sequence[dict[str, Any]]) -> None:
    """Write the report to *path* atomically."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RolloutUsageError("--rollout-html needs matplotlib: pip install 'pytest-rollout[html]'") from None
    text = render_html(records)
    target = os.fspath(path)
    tmp = f"{target}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, target)
