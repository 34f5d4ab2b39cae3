"""The skips CI allows, and the check that a pytest run made no other.

The allow-list is the README's section "What may skip": one line per skip CI
allows, ``- `REASON`: why``, where REASON is how the skip's reason begins.
``tests/conftest.py`` reads it to fail any other skip when ``ROLLOUT_CI=1``;
``.ci/run`` runs this file on each pytest command's output:

    python3 .ci/skips.py README.md pytest-output.log

It counts the skips in pytest's last summary line and matches each one that
``-ra`` lists (``SKIPPED [N] file:line: reason``) against the list; any skip
not listed, or counted but not listed by ``-ra``, fails it (exit 1). Standard
library only: it runs in a brand-new virtualenv.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["allowed_skips", "is_allowed", "main", "unlisted_skips"]

SECTION = "### What may skip"
ALLOWED = re.compile(r"^- `([^`]+)`: ", re.M)
LISTED = re.compile(r"^SKIPPED \[(\d+)\] (\S+?): (.*)$")
TOTAL = re.compile(r"^=*\s*(no tests ran|\d+ \w+(?:, \d+ \w+)*) in [\d.]+s\b")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def allowed_skips(readme: str) -> list[str]:
    """How each skip CI allows begins, from the README's section (its lines up to the next heading)."""
    start = readme.find(f"\n{SECTION}\n")
    if start < 0:
        raise ValueError(f"the README has no section {SECTION!r}")
    body = readme[start + len(SECTION) + 2 :]
    end = re.search(r"^#", body, re.M)
    return ALLOWED.findall(body[: end.start() if end else len(body)])


def is_allowed(reason: str, allowed: list[str]) -> bool:
    reason = reason.removeprefix("Skipped: ")
    return any(reason.startswith(prefix) for prefix in allowed)


def unlisted_skips(output: str, allowed: list[str]) -> list[str]:
    """The skips in one pytest run's terminal output that *allowed* does not cover, each as pytest lists it."""
    lines = [ANSI.sub("", line) for line in output.splitlines()]
    totals = [m.group(1) for line in lines if (m := TOTAL.match(line))]
    if not totals:
        return ["no pytest summary line in the output: cannot count its skips"]
    counted = re.search(r"(\d+) skipped", totals[-1])
    total = int(counted.group(1)) if counted else 0
    bad, allowed_count = [], 0
    for line in lines:
        if (m := LISTED.match(line)) is not None:
            if is_allowed(m.group(3), allowed):
                allowed_count += int(m.group(1))
            else:
                bad.append(line)
    if total > allowed_count and not bad:
        bad.append(f"{total - allowed_count} skipped, not listed by -ra (is -ra still in the addopts?)")
    return bad


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 .ci/skips.py README.md PYTEST-OUTPUT", file=sys.stderr)
        return 2
    readme, output = (Path(arg).read_text() for arg in argv)
    bad = unlisted_skips(output, allowed_skips(readme))
    for line in bad:
        print(f"ci: a skip the README's {SECTION[4:]!r} does not allow: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
