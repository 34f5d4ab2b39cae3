"""Reports: the JSON file and the terminal summary, both built from the per-test records.

The JSON report (``--rollout-report PATH``)::

    {"tests": [{"nodeid", "outcome", "requested_rps",
                "phases": {"ramp"|"baseline"|"upgrade"|"after":
                           {"start", "end", "achieved_rps", "error_rate",
                            "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                            "requests", "errors", ...}},
                "verdicts": [{"slo", "phase", "measured", "bound", "passed", "reason"}],
                ...}]}

In a mix of more than one route, each phase also has ``"routes": {name: {"requests", "errors", "error_rate",
"p50_ms", ..., "outcome"}}`` (the route's own counts, and its worst outcome in the phase), and each verdict entry
judging one route has ``"route": name``; a one-route run has neither.

Timestamps are Unix seconds. Extra keys (``events``, ``queries``,
``errors_by_class``, ``fleet_requests``, ``workers``, ``engine``) may be
added; the keys above are stable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_rollout.judge.verdict import slo_name
from pytest_rollout.numeric import number_or_none

__all__ = ["format_summary", "write_report"]


def write_report(path: str | os.PathLike[str], records: Sequence[dict[str, Any]], interrupted: bool = False) -> Path:
    """Write the JSON report atomically (a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"tests": list(records), "interrupted": interrupted}, indent=2, allow_nan=False))
    tmp.replace(target)
    return target


_MARKS = {"held": " ok", "broken": " BROKEN", "not_proven": " not proven"}


def _mark(v: dict[str, Any] | None) -> str:
    if v is None:
        return ""
    return _MARKS.get(v.get("outcome") or ("held" if v.get("passed") else "broken"), "")


def _num(value: Any, fmt: str) -> str:
    if number_or_none(value) is None:
        return "n/a"
    return format(value, fmt)


def format_summary(record: dict[str, Any]) -> list[str]:
    """Lines for one SLO test: asked vs held rps, and per phase each SLO against its bound.

    The table shows the load, error-rate and latency entries of each phase;
    every other entry (a user check, availability, a baseline regression, a
    hook's entry) gets a line of its own below. Entries are told apart by
    their ``kind``, never by their names.
    """
    from pytest_rollout.slo import LATENCY_KEYS

    verdicts = record["verdicts"]
    table = {_key(v): v for v in verdicts if v.get("kind") in ("load", "error_rate", "latency")}
    bounded = {v["slo"] for v in verdicts if v.get("kind") == "latency"}
    shown = sorted({"p50_ms", "p99_ms"} | bounded, key=lambda k: LATENCY_KEYS.get(k, 1.0))
    result = str(record.get("result") or record["outcome"]).replace("_", " ")
    nodes = sorted(set(((record.get("fleet") or {}).get("nodes") or {}).values()))
    spread = f" on {len(nodes)} nodes ({', '.join(nodes)})" if len(nodes) > 1 else ""
    head = (
        f"{record['nodeid']} {result.upper()}: asked {record['requested_rps']:,.0f} rps"
        f" ({record.get('workers', 0)} workers{spread}, engine {record.get('engine') or 'n/a'})"
    )
    lines = [head]
    if record.get("failure"):
        lines.extend("  " + line for line in str(record["failure"]).splitlines())
    header = f"  {'phase':<9}{'held rps':>22}{'requests':>10}{'errors':>8}{'error_rate':>30}"
    for key in shown:
        header += f"{key:>26}"
    lines.append(header)
    for phase, data in record["phases"].items():
        rps_v = table.get(("rps", phase, None))
        held = f"{_num(data.get('achieved_rps'), ',.0f')}{_mark(rps_v)}"
        routes = data.get("routes") or {}  # a mix of several routes: each judged on its own, the whole shown
        row = _row(f"  {phase:<9}{held:>22}", data, table, shown, phase, None)
        lines.append(row + ("  (all routes: the routes below decide)" if routes else ""))
        for route, label in _labels(list(routes), ROUTE_WIDTH).items():
            rps = _num(routes[route].get("achieved_rps"), ",.0f")
            lines.append(
                _row(f"    {label:<{ROUTE_WIDTH}}{rps:>{29 - ROUTE_WIDTH}}", routes[route], table, shown, phase, route)
            )
    for v in verdicts:
        if _key(v) in table:
            continue
        measured = _num(v.get("measured"), ".6g")
        bound = _num(v.get("bound"), "g")
        lines.append(
            f"  {v.get('kind', 'extra')} {slo_name(str(v['slo']), v.get('route'))} in {v['phase']}: {measured} {v.get('op', '')} {bound}{_mark(v)}"
        )
    for v in verdicts:
        if v.get("outcome", "held") != "held" and v.get("reason"):
            lines.append(f"  {slo_name(str(v['slo']), v.get('route'))} in {v['phase']}: {v['reason']}")
    return lines


def _key(v: dict[str, Any]) -> tuple[str, str, str | None]:
    return v["slo"], v["phase"], v.get("route")


#: The width of a route's name in the terminal table; a longer name is clipped.
ROUTE_WIDTH = 20


def _labels(names: Sequence[str], width: int) -> dict[str, str]:
    """Each route's name as the table shows it, at most *width* characters, distinct names staying distinct.

    A longer name is clipped and ends ``~<n>``, *n* its place in the mix: ``a-very-long-route-n~3``.
    """
    labels = {n: n if len(n) <= width else f"{n[: width - 1 - len(str(i + 1))]}~{i + 1}" for i, n in enumerate(names)}
    if len(set(labels.values())) < len(labels):  # a short name looking like a clipped one: mark every name
        labels = {n: f"{n[: width - 1 - len(str(i + 1))]}~{i + 1}" for i, n in enumerate(names)}
    return labels


def _row(
    lead: str,
    data: dict[str, Any],
    table: dict[tuple[str, str, str | None], dict[str, Any]],
    shown: list[str],
    phase: str,
    route: str | None,
) -> str:
    """One row of the table: *lead* (the phase and held rps, or a route's name), then counts and each SLO."""
    err_v = table.get(("error_rate", phase, route))
    err = _num(data.get("error_rate"), ".5f")
    if err_v:
        err += f" <={err_v['bound']:g}{_mark(err_v)}"
    row = f"{lead}{_num(data.get('requests'), ',.0f'):>10}{_num(data.get('errors'), ',.0f'):>8}{err:>30}"
    for key in shown:
        v = table.get((key, phase, route))
        cell = _num(data.get(key), ".2f")
        if v:
            cell += f" <={v['bound']:g}{_mark(v)}"
        row += f"{cell:>26}"
    return row
