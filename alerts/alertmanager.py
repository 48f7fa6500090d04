"""The Alertmanager configuration: who hears which alert, built from one profile's tunables.

- Remediation alerts (any ``remediation`` label) go to the remediator's webhook, one group per
  execution, with a bearer token read from a file. Repeats are how unfinished work is retried:
  the remediator re-verifies on every delivery, so a repeat is always safe.
- The heartbeat goes to its own receiver (a dead man's switch, when the operator names one).
- Everything else goes to people (a placeholder receiver unless a webhook URL is given).

Inhibitions: an unreachable agent mutes its executions' remediation alerts; an orphaned or
overdue execution mutes its own stuck warning; an open breaker mutes its remediator's failing page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.common import contract
from exec_watchdog.common.contract import REMEDIATION_LABEL

REMEDIATOR_RECEIVER = "remediator"
OPERATOR_RECEIVER = "operators"
HEARTBEAT_RECEIVER = "heartbeat"

# One silence with this matcher pauses every remediation (alerts/runbook.md says how).
PAUSE_REMEDIATION_MATCHER = f'{REMEDIATION_LABEL}=~".+"'

# Remediations that do not need the agent to answer (an unreachable agent is their premise, or
# they touch no agent): an unreachable agent does not hold them.
NEEDS_AGENT_MATCHER = (f'{REMEDIATION_LABEL}!~"'
                       f'{"|".join((*contract.UNREACHABLE_ACTIONS, contract.RELEASE_LEAKED_SLOT))}"')
REMEDIATION_GROUP_BY = ["alertname", "agent", "execution_id"]
OPERATOR_GROUP_BY = ["alertname", "agent"]


def _checked_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an http(s) URL like http://remediator:9464/api/v1/alerts, got {url!r}")
    return url


def _webhook_receiver(name: str, urls: Sequence[str], *, send_resolved: bool,
                      credentials_file: str | None = None) -> dict[str, Any]:
    if not urls:
        return {"name": name}  # a placeholder: Alertmanager accepts a receiver that sends nothing
    webhooks = []
    for url in urls:
        webhook: dict[str, Any] = {"url": url, "send_resolved": send_resolved, "max_alerts": 0}
        if credentials_file is not None:
            webhook["http_config"] = {
                "authorization": {"type": "Bearer", "credentials_file": credentials_file},
            }
        webhooks.append(webhook)
    return {"name": name, "webhook_configs": webhooks}


def _optional(url: str | None) -> list[str]:
    return [] if url is None else [url]


def alertmanager_config(profile: Profile, webhook_url: str | Sequence[str], credentials_file: str, *,
                        operator_webhook_url: str | None = None,
                        heartbeat_webhook_url: str | None = None) -> dict[str, Any]:
    """The alertmanager.yml for ``profile``, as a dict ready to dump as YAML.

    ``webhook_url`` is the remediator's ``/api/v1/alerts`` (or one per replica: each replica then
    gets every notification and the guarded transition decides which one acts); ``credentials_file``
    holds its bearer token. The operator and heartbeat receivers send nothing unless given a webhook URL.
    """
    webhook_urls = [webhook_url] if isinstance(webhook_url, str) else list(webhook_url)
    if not webhook_urls:
        raise ValueError("at least one remediator webhook URL is needed")
    for url in webhook_urls:
        _checked_url("webhook_url", url)
    if not credentials_file.strip() or "\n" in credentials_file:
        raise ValueError(f"credentials_file must be a file path, got {credentials_file!r}")
    for name, optional in (("operator_webhook_url", operator_webhook_url),
                           ("heartbeat_webhook_url", heartbeat_webhook_url)):
        if optional is not None:
            _checked_url(name, optional)

    return {
        "route": {
            "receiver": OPERATOR_RECEIVER,
            "group_by": OPERATOR_GROUP_BY,
            "group_wait": profile.operator_group_wait,
            "group_interval": profile.operator_group_interval,
            "repeat_interval": profile.operator_repeat_interval,
            "routes": [
                {
                    "receiver": HEARTBEAT_RECEIVER,
                    "matchers": [f'alertname="{contract.HEARTBEAT}"'],
                    "group_by": ["alertname"],
                    "group_wait": "0s",
                    "group_interval": profile.heartbeat_interval,
                    "repeat_interval": profile.heartbeat_interval,
                },
                {
                    "receiver": REMEDIATOR_RECEIVER,
                    "matchers": [PAUSE_REMEDIATION_MATCHER],
                    "group_by": REMEDIATION_GROUP_BY,
                    "group_wait": profile.group_wait,
                    "group_interval": profile.group_interval,
                    "repeat_interval": profile.repeat_interval,
                },
            ],
        },
        "inhibit_rules": [
            # Nothing about an agent's executions can be verified while it does not answer.
            {
                "source_matchers": [f'alertname="{contract.AGENT_UNREACHABLE}"'],
                "target_matchers": [PAUSE_REMEDIATION_MATCHER, NEEDS_AGENT_MATCHER],
                "equal": ["agent"],
            },
            # A stuck warning adds nothing once the watchdog is recovering that execution.
            {
                "source_matchers": [f'alertname=~"{contract.ORPHANED}|{contract.OVERDUE}"'],
                "target_matchers": [f'alertname="{contract.STUCK}"'],
                "equal": ["agent", "execution_id"],
            },
            # An open breaker answers 503 on purpose: page once, for the cause.
            {
                "source_matchers": [f'alertname="{contract.BREAKER_OPEN}"'],
                "target_matchers": [f'alertname="{contract.REMEDIATOR_FAILING}"'],
                "equal": ["job", "instance"],
            },
        ],
        "receivers": [
            _webhook_receiver(OPERATOR_RECEIVER, _optional(operator_webhook_url), send_resolved=True),
            _webhook_receiver(HEARTBEAT_RECEIVER, _optional(heartbeat_webhook_url), send_resolved=False),
            _webhook_receiver(REMEDIATOR_RECEIVER, webhook_urls, send_resolved=True,
                              credentials_file=credentials_file),
        ],
    }
