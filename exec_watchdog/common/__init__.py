"""The bottom layer every part shares: flags with environment fallbacks, logging, generated files.

It imports nothing else of exec-watchdog (the import-linter contracts in pyproject.toml check it).
"""
