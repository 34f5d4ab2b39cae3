"""PromQL building."""

from __future__ import annotations

from pytest_rollout.judge.promql import escape, last_scrape, live_queries, phase_queries, window


def test_window_in_milliseconds() -> None:
    assert window(12.3456) == "12346ms"
    assert window(0) == "1ms"


def test_escape() -> None:
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_phase_queries() -> None:
    q = phase_queries("run1", "upgrade", 4.5, [0.5, 0.99])
    assert q.requests == 'sum(rollout_requests_total{run="run1",phase="upgrade"})'
    assert q.by_class == 'sum by (class) (rollout_requests_total{run="run1",phase="upgrade"})'
    assert q.late == 'sum(rollout_late_total{run="run1",phase="upgrade"})'
    assert q.samples == 'up{run="run1",worker!=""}[4500ms]'
    assert q.quantiles[0.99] == (
        'histogram_quantile(0.99, sum by (le) (rollout_request_duration_seconds_bucket{run="run1",phase="upgrade"}))'
    )
    assert q.histogram == 'sum by (le) (rollout_request_duration_seconds_bucket{run="run1",phase="upgrade"})'
    assert q.resent == 'sum(rollout_resent_total{run="run1",phase="upgrade"})'
    assert set(q.all()) == {
        "requests",
        "by_class",
        "late",
        "resent",
        "samples",
        "histogram",
        "quantile_0.5",
        "quantile_0.99",
    }


def test_live_queries_cover_the_recent_window() -> None:
    q = live_queries("r", 3.0, [0.5, 0.99])
    assert q["rps"] == 'sum(rate(rollout_requests_total{run="r"}[3000ms]))'
    assert q["error_rate"] == (
        'sum(rate(rollout_requests_total{run="r",class!="ok"}[3000ms])) / sum(rate(rollout_requests_total{run="r"}[3000ms]))'
    )
    assert q["p99_ms"] == (
        'histogram_quantile(0.99, sum by (le) (rate(rollout_request_duration_seconds_bucket{run="r"}[3000ms]))) * 1000'
    )
    assert set(q) == {"rps", "error_rate", "p50_ms", "p99_ms"}


def test_label_values_are_escaped() -> None:
    q = phase_queries('x"}', "p", 1, [])
    assert 'run="x\\"}"' in q.requests
    assert last_scrape("r") == 'timestamp(rollout_scheduled_total{run="r"})'


def test_prometheus_api_errors_are_read_from_the_body() -> None:
    from pytest_rollout.judge.prometheus import _api_error

    raw = (
        'HTTP Status Code 400 (b\'{"status":"error","errorType":"bad_data",'
        '"error":"invalid parameter \\\\"query\\\\": 1:50: parse error: unclosed left parenthesis"}\')'
    )
    assert (
        _api_error(Exception(raw))
        == 'bad_data: invalid parameter "query": 1:50: parse error: unclosed left parenthesis'
    )
    assert _api_error(Exception("something else")) == "something else"
