"""Root conftest: the plugin itself is loaded through its pytest11 entry point.

benchmarks/ holds scripts, not tests; keep pytest from collecting them.
"""

collect_ignore_glob = ["benchmarks/*"]
