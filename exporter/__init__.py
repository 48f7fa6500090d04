"""The exporter: running executions, agent presence and capacity on /metrics (see README.md)."""
