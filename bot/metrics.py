"""Prometheus metrics of the service, in one injectable registry (tests use their own).

The voice plane counts in plain `VoiceCounters` per link (no metrics dependency on its hot
paths); a collector sums them on scrape, adding the totals of links that have ended so the
exported counters never go backwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from media.realtime import RealtimeError

from .voice import VoiceCounters

__all__ = ["Metrics"]

VOICE_FIELDS = tuple(f.name for f in dataclasses.fields(VoiceCounters))


class _VoiceCollector(Collector):
    def __init__(self) -> None:
        self.links: Callable[[], Iterable[tuple[VoiceCounters, int]]] = lambda: ()
        self.retired = VoiceCounters()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        totals = dict(self.retired.snapshot())
        speakers = 0
        for counters, speaking in self.links():
            speakers += speaking
            for name, value in counters.snapshot().items():
                totals[name] += value
        for name in VOICE_FIELDS:
            yield CounterMetricFamily(
                f"switchboard_discord_{name}", f"Discord voice: {name.replace('_', ' ')}", value=totals[name]
            )
        yield GaugeMetricFamily("switchboard_speakers", "Discord speakers published into rooms", value=speakers)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.bridges = Gauge("switchboard_bridges", "Voice channels bridged into rooms", registry=r)
        self.realtime_errors = Counter(
            "switchboard_realtime_errors_total",
            "Realtime API errors (request-level and per item) by error code",
            ["code"],
            registry=r,
        )
        self._voice = _VoiceCollector()
        r.register(self._voice)

    def realtime_error(self, error: RealtimeError) -> None:
        self.realtime_errors.labels(code=error.error_code or "transport_error").inc()

    def watch_voice(self, links: Callable[[], Iterable[tuple[VoiceCounters, int]]]) -> None:
        """`links()` gives each live link's counters and its number of speakers."""
        self._voice.links = links

    def retire_voice(self, counters: VoiceCounters) -> None:
        """Keep an ended link's counts in the totals."""
        for name, value in counters.snapshot().items():
            setattr(self._voice.retired, name, getattr(self._voice.retired, name) + value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
