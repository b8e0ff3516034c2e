"""Prometheus metrics of the service, in one injectable registry (tests use their own).

The voice plane counts in plain `VoiceCounters` per link (no metrics dependency on its hot
paths); a collector sums them on scrape, adding the totals of links that have ended so the
exported counters never go backwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from media.bridge import BridgeCounters
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


MEDIA_COUNTERS = (
    ("jitter_underruns", "Times a subscribed stream's jitter buffer ran dry while playing"),
    ("jitter_late_dropped", "Packets that arrived after their playout time"),
    ("concealed_frames", "Frames concealed (PLC) for lost, late or missing packets"),
    ("fec_recovered_frames", "Frames rebuilt from the next packet's in-band FEC"),
    ("stream_restarts", "Subscribed streams whose timestamps jumped (sender restarted)"),
    ("inbound_dropped", "Received packets dropped because the mixer fell over 1 s behind"),
    ("decode_errors", "Opus packets that failed to decode"),
    ("source_dropped", "Speaker packets dropped before sending (sender stalled over 500 ms)"),
    ("peer_recoveries", "Realtime sessions rebuilt after a failure"),
    ("room_resyncs", "Room event streams re-entered from a fresh snapshot"),
    ("pull_failures", "Subscription attempts that failed and were retried"),
)


def _media_values(c: BridgeCounters) -> dict[str, int]:
    s = c.streams
    return {
        "jitter_underruns": s.underruns,
        "jitter_late_dropped": s.late_dropped,
        "concealed_frames": s.concealed_frames,
        "fec_recovered_frames": s.fec_recovered,
        "stream_restarts": s.restarts,
        "inbound_dropped": s.inbound_dropped,
        "decode_errors": c.decode_errors,
        "source_dropped": c.source_dropped,
        "peer_recoveries": c.peer_recoveries,
        "room_resyncs": c.resyncs,
        "pull_failures": c.pull_failures,
    }


class _MediaCollector(Collector):
    """Sums every live bridge's counters on scrape, plus those of bridges that ended."""

    def __init__(self) -> None:
        self.bridges: Callable[[], Iterable[BridgeCounters]] = lambda: ()
        self.retired = {name: 0 for name, _ in MEDIA_COUNTERS}

    def collect(self) -> Iterator[CounterMetricFamily]:
        totals = dict(self.retired)
        for counters in self.bridges():
            for name, value in _media_values(counters).items():
                totals[name] += value
        for name, doc in MEDIA_COUNTERS:
            yield CounterMetricFamily(f"switchboard_media_{name}", doc, value=totals[name])


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
        self._media = _MediaCollector()
        r.register(self._media)
        self.recovery_seconds = Histogram(
            "switchboard_peer_recovery_seconds",
            "From noticing a failed Realtime session to its replacement carrying the tracks",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
            registry=r,
        )

    def realtime_error(self, error: RealtimeError) -> None:
        self.realtime_errors.labels(code=error.error_code or "transport_error").inc()

    def watch_voice(self, links: Callable[[], Iterable[tuple[VoiceCounters, int]]]) -> None:
        """`links()` gives each live link's counters and its number of speakers."""
        self._voice.links = links

    def retire_voice(self, counters: VoiceCounters) -> None:
        """Keep an ended link's counts in the totals."""
        for name, value in counters.snapshot().items():
            setattr(self._voice.retired, name, getattr(self._voice.retired, name) + value)

    def watch_media(self, bridges: Callable[[], Iterable[BridgeCounters]]) -> None:
        """`bridges()` gives each live bridge's counters."""
        self._media.bridges = bridges

    def retire_media(self, counters: BridgeCounters) -> None:
        for name, value in _media_values(counters).items():
            self._media.retired[name] += value

    def render(self) -> bytes:
        return generate_latest(self.registry)
