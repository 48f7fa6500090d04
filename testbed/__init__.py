"""What the tests, the benchmarks and the soak share: real throwaway servers on free loopback ports,
platform rows written the way Trinity writes them, Alertmanager notification builders, a remediator
wired to real peers, the fault-injection helpers and the invariant checker.

Tooling, not product: no part of exec-watchdog imports it (pyproject.toml's import contracts), and it
needs nothing from the test extra, except ``fuzz/`` (Hypothesis strategies), which stays out of the wheel.
"""
