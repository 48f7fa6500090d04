"""The dashboard as code (grafana-foundation-sdk, a test-extra dependency): a build-time tool.

Not installed with the package: only its committed output, ``grafana/dashboards/*.json``, is.
"""
