"""Prometheus alert rules and the Alertmanager configuration of exec-watchdog.

One source for every deployment: ``profiles.yml`` holds the tunables (a ``fast`` profile for the
demo and end-to-end tests, a ``production`` one), ``rules.py`` and ``alertmanager.py`` build the
files from a profile, ``render.py`` writes them (committed copies in ``generated/``), and
``rule_tests.py`` builds their promtool unit tests. ``runbook.md`` is what each alert links to.
"""
