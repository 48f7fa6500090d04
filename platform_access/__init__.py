"""Reading and writing the agent platform's state: its database, its agents, its Redis."""

from __future__ import annotations

# The embedded database `exec-watchdog db init` creates: the default of every command that reads it.
DEFAULT_DATABASE_URL = "sqlite:///exec-watchdog.db"
