"""Scraping a node's or central's ``/metrics`` listener (docs/metrics.md)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

#: Every sample of a scrape: (name, sorted labels) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """``GET /metrics`` on 127.0.0.1:``port``, parsed with prometheus_client's parser."""
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the scrape has none)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
