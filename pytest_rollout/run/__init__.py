"""One SLO test's run: the Rollout the fixture hands out, the session it lives in, interrupts."""
