"""The metrics of ``metrics/`` in prometheus_client's default registry (the ``[prometheus]``
extra): a site that serves its own ``/metrics`` (django-prometheus) shows them there.

Registered once by ``AppConfig.ready`` when prometheus_client is importable; read from the
outbox at scrape time. A scrape while the database is down yields none of them, and never
fails the site's other metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .health import metrics

logger = logging.getLogger("django_supalytics")


class SupalyticsCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            families = metrics()
        except Exception:
            logger.warning("supalytics metrics: the outbox could not be read", exc_info=True)
            return
        for name, help_text, samples in families:
            label_names = list(samples[0][0]) if samples else []
            family = GaugeMetricFamily(name, help_text, labels=label_names)
            for labels, value in samples:
                family.add_metric([labels[k] for k in label_names], value)
            yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Nothing: without describe() registering would collect, reading the database.
        return iter(())


_collector: SupalyticsCollector | None = None


def register() -> SupalyticsCollector:
    """Put the collector in ``prometheus_client.REGISTRY``, once per process."""
    global _collector
    if _collector is None:
        _collector = SupalyticsCollector()
        REGISTRY.register(_collector)
    return _collector
