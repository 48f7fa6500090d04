"""The webhook fuzz world and its Hypothesis strategies, shared by tests/test_fuzz_webhook.py and
bench/fuzz_webhook.py.

Needs the test extra (hypothesis, psutil), so it is not installed with the package (see pyproject.toml).
"""
