"""Reports: the JSON file and the terminal summary, both built from the per-test records.

The JSON report (``--rollout-report PATH``)::

    {"tests": [{"nodeid", "outcome", "requested_rps",
                "phases": {"ramp"|"baseline"|"upgrade"|"after":
                           {"start", "end", "achieved_rps", "error_rate",
                            "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                            "requests", "errors", ...}},
                "verdicts": [{"slo", "phase", "measured", "bound", "passed", "reason"}],
                ...}]}

Timestamps are Unix seconds. Extra keys (``events``, ``queries``,
``errors_by_class``, ``fleet_requests``, ``workers``, ``engine``) may be
added; the keys above are stable.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_summary", "write_report"]


def write_report(path: str | os.PathLike[str], records: Sequence[dict[str, Any]], interrupted: bool = False) -> Path:
    """Write the JSON report atomically (a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"tests": list(records), "interrupted": interrupted}, indent=2, allow_nan=False))
    tmp.replace(target)
    return target


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " FAIL")


def _num(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def format_summary(record: dict[str, Any]) -> list[str]:
    """Lines for one SLO test: asked vs held rps, and per phase each SLO against its bound."""
    verdicts: dict[tuple[str, str], dict[str, Any]] = {(v["slo"], v["phase"]): v for v in record["verdicts"]}
    latency_keys = sorted({slo for slo, _ in verdicts if slo.endswith("_ms")}, key=lambda k: float("0." + k[1:-3]))
    shown = ["p50_ms", "p99_ms"] + [k for k in latency_keys if k not in ("p50_ms", "p99_ms")]
    head = (
        f"{record['nodeid']} {record['outcome'].upper()}: asked {record['requested_rps']:,.0f} rps"
        f" ({record.get('workers', 0)} workers, engine {record.get('engine') or 'n/a'})"
    )
    lines = [head]
    if record.get("failure"):
        lines.extend("  " + line for line in str(record["failure"]).splitlines())
    header = f"  {'phase':<9}{'held rps':>16}{'requests':>10}{'errors':>8}{'error_rate':>22}"
    for key in shown:
        header += f"{key:>20}"
    lines.append(header)
    for phase, data in record["phases"].items():
        rps_v = verdicts.get(("rps", phase))
        err_v = verdicts.get(("error_rate", phase))
        held = f"{_num(data.get('achieved_rps'), ',.0f')}{_mark(rps_v['passed'] if rps_v else None)}"
        err = _num(data.get("error_rate"), ".5f")
        if err_v:
            err += f" <={err_v['bound']:g}{_mark(err_v['passed'])}"
        row = f"  {phase:<9}{held:>16}{_num(data.get('requests'), ',.0f'):>10}{_num(data.get('errors'), ',.0f'):>8}{err:>22}"
        for key in shown:
            v = verdicts.get((key, phase))
            cell = _num(data.get(key), ".2f")
            if v:
                cell += f" <={v['bound']:g}{_mark(v['passed'])}"
            row += f"{cell:>20}"
        lines.append(row)
    for v in record["verdicts"]:
        if not v["passed"] and v.get("reason"):
            lines.append(f"  {v['slo']} in {v['phase']}: {v['reason']}")
    return lines
