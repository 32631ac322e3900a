"""Reading ``make run``'s Prometheus endpoint (``tools.local.metrics``) the way Prometheus does:
an HTTP scrape of ``/metrics``, parsed with prometheus_client's own text parser."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """Every sample the endpoint serves now, by (sample name, labels)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One series' value; 0 for a series not (yet) there, as Prometheus's ``or vector(0)``."""
    return samples.get((name, frozenset(labels.items())), 0.0)
