"""Prometheus text format (0.0.4) for gauge and counter families, three times faster than
``prometheus_client.generate_latest`` and byte for byte the same output.

At 10,000 running executions a scrape has 30,000 labelled samples; ``generate_latest`` spends
~0.2 s on them (its OpenMetrics twin ~0.4 s), a fifth of the whole scrape budget. The families
here have no timestamps, exemplars or ``_created`` samples and their samples share the family's
label names, so one join per sample is enough. Any family outside that shape is handed to
client_python unchanged. ``tests/test_exporter_exposition.py`` checks the bytes against
``generate_latest``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# client_python's own number formatting (Go style: 1e+06, +Inf, NaN), so values match exactly.
_number: Callable[[float], str] = floatToGoString


def _escape_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return value


def _fast_path(family: Metric) -> bool:
    if family.type not in ("gauge", "counter"):
        return False
    expected = family.name + "_total" if family.type == "counter" else family.name
    first = family.samples[0] if family.samples else None
    if first is not None and list(first.labels) != sorted(first.labels):
        return False  # client_python sorts label names; keep its byte order
    return all(s.name == expected and s.timestamp is None and s.exemplar is None and s.native_histogram is None
               for s in family.samples)


class _One:
    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterable[Metric]:
        return [self.family]


def render_text(families: Iterable[Metric]) -> bytes:
    """The text exposition of ``families``, exactly as ``generate_latest`` would write it."""
    out: list[str] = []
    for family in families:
        if not _fast_path(family):
            out.append(generate_latest(_One(family)).decode())
            continue
        name = family.name + "_total" if family.type == "counter" else family.name
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {family.type}\n")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join([f'{k}="{_escape_value(v)}"' for k, v in sample.labels.items()])
                out.append(f"{name}{{{labels}}} {_number(sample.value)}\n")
            else:
                out.append(f"{name} {_number(sample.value)}\n")
    return "".join(out).encode()
