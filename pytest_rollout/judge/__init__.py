"""The judgement: Prometheus, PromQL, measurements, exact intervals, verdicts and baselines."""
