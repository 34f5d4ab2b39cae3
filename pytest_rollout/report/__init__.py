"""What a run leaves: the JSON report and terminal summary, the HTML report, live progress."""
