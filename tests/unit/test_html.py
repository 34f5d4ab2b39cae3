"""The HTML report, rendered from report records (the real-browser check is in tests/e2e/test_reports.py)."""

from __future__ import annotations

from pathlib import Path

from pytest_rollout.report.html_report import render_html, write_html

RECORD = {
    "nodeid": "tests/test_shop.py::test_<v2>",
    "result": "slo_broken",
    "requested_rps": 100.0,
    "platform": "local",
    "workers": 1,
    "engine": "fast",
    "run_id": "abc",
    "failure": None,
    "rollback": "rolled back to v1 (python app.py): 2 replica(s) replaced",
    "phases": {
        "baseline": {
            "start": 100.0,
            "end": 110.0,
            "achieved_rps": 100.0,
            "requests": 1000,
            "errors": 0,
            "error_rate": 0.0,
            "p50_ms": 2.0,
            "p99_ms": 9.0,
            "queries": {"requests": 'sum(rollout_requests_total{run="abc",phase="baseline"})'},
        },
        "after": {
            "start": 112.0,
            "end": 122.0,
            "achieved_rps": 100.0,
            "requests": 1000,
            "errors": 3,
            "error_rate": 0.003,
            "p50_ms": 150.0,
            "p99_ms": 160.0,
            "queries": {},
        },
    },  # fmt: skip
    "verdicts": [
        {
            "slo": "p99_ms",
            "phase": "baseline",
            "measured": 9.0,
            "bound": 100.0,
            "passed": True,
            "reason": "",
            "op": "<=",
            "kind": "latency",
            "outcome": "held",
            "interval": [8.0, 10.0],
        },
        {
            "slo": "p99_ms",
            "phase": "after",
            "measured": 160.0,
            "bound": 100.0,
            "passed": False,
            "reason": "p99 latency 160.0 ms exceeds 100 ms",
            "op": "<=",
            "kind": "latency",
            "outcome": "broken",
            "interval": [150.0, 170.0],
        },
        {
            "slo": "error_rate",
            "phase": "after",
            "measured": 0.003,
            "bound": 0.001,
            "passed": False,
            "reason": "3 of 1000 requests failed, 95% interval straddles 0.001",
            "op": "<=",
            "kind": "error_rate",
            "outcome": "not_proven",
            "interval": [0.0006, 0.0087],
        },
    ],  # fmt: skip
    "events": [{"at": 111.0, "action": "ready", "replica": "v2-0", "detail": ""}],
    "error_budget": {
        "availability": 0.999,
        "budget_requests": 2.0,
        "spent": 1.5,
        "phases": {
            "baseline": {"errors": 0, "spent": 0.0, "burn_rate": 0.0},
            "after": {"errors": 3, "spent": 1.5, "burn_rate": 3.0},
        },
    },  # fmt: skip
    "series": {
        name: {"query": f"{name} query", "points": [[100.0 + i, value] for i in range(22)]}
        for name, value in (("rps", 100.0), ("error_rate", 0.001), ("p50_ms", 2.0), ("p99_ms", 9.0))
    },
}


def test_the_report_holds_charts_tables_budget_and_every_query() -> None:
    page = render_html([RECORD])
    assert page.count('<figure class="chart"><svg') == 1
    assert "tests/test_shop.py::test_&lt;v2&gt;" in page and "<v2>" not in page  # escaped
    assert 'class="badge slo_broken"' in page
    assert page.count('<tr class="broken">') == 1 and page.count('<tr class="not_proven">') == 1
    assert "<td class=num>[150.00, 170.00]</td>" in page and "not proven" in page
    assert "<td class=num>0.00300</td>" in page  # error rates keep their decimals
    assert "burn rate" in page and "<td class=num>3.00</td>" in page
    assert "rollback_on_breach: rolled back to v1" in page
    assert "sum(rollout_requests_total{run=&quot;abc&quot;,phase=&quot;baseline&quot;})" in page
    assert "p99_ms query" in page
    assert "<script src" not in page and "<link" not in page  # self-contained


def test_a_record_without_series_says_why_there_is_no_chart(tmp_path: Path) -> None:
    record = {**RECORD, "series": {}}
    page = render_html([record])
    assert "No time series: Prometheus could not be read at the end of the run." in page
    target = tmp_path / "r.html"
    write_html(target, [record])
    assert "No time series" in target.read_text() and target.read_text().endswith("</html>")
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # written atomically: no temporary file left
