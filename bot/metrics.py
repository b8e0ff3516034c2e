"""Prometheus metrics of the service, in one injectable registry (tests use their own).

The voice plane counts in plain `VoiceCounters` per link (no metrics dependency on its hot
paths); a collector sums them on scrape, adding the totals of links that have ended so the
exported counters never go backwards.

The service's state (rooms, web participants, each bridge's link quality) is read when
/metrics is scraped (`refresh()`), from the room directory and the bridges' Realtime peers;
the registry also carries the standard `process_*` collectors (memory, CPU, open FDs).

What a bridged channel costs: `rate(process_cpu_seconds_total) / switchboard_bridges` (one
service process), split by the threads that spend it in `switchboard_thread_cpu_seconds_total`
(the event loop; discord.py's player and socket reader per voice connection; voice_recv's
threads), with the send path's work in `switchboard_discord_frames_{passed_through,encoded,
suppressed}_total`: a passed-through or suppressed frame costs no encode.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from media.bridge import BridgeCounters
from media.peer import PeerStats
from media.realtime import RealtimeError
from media.rooms import MemberKind, RoomDirectory

from .voice import VoiceCounters

__all__ = ["LinkQuality", "Metrics", "ServiceStateMetrics", "link_quality"]

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
                f"switchboard_discord_{name}",
                f"Discord voice: {name.replace('_', ' ')}",
                value=totals[name],
            )
        yield GaugeMetricFamily(
            "switchboard_speakers", "Discord speakers published into rooms", value=speakers
        )


THREAD_ROLES = (
    ("event_loop", re.compile(r"MainThread$")),
    ("discord_player", re.compile(r"audio-player:")),
    ("discord_socket_reader", re.compile(r"voice-socket-reader:")),
    ("voice_recv", re.compile(r"(packet-router|sink-event-router|speaking-timer)-")),
)
"""Threads by what they do for the bridges; any other thread counts as `other`."""


def thread_role(name: str) -> str:
    for role, pattern in THREAD_ROLES:
        if pattern.match(name):
            return role
    return "other"


class _ThreadCpuCollector(Collector):
    """CPU seconds of the live threads, summed by role, plus those of threads that ended (so
    the counter never goes backwards: a thread's CPU is banked when it is last seen)."""

    def __init__(self) -> None:
        self._ended = {role: 0.0 for role, _ in THREAD_ROLES} | {"other": 0.0}
        self._last: dict[tuple[int, int, str], tuple[str, float]] = {}  # thread -> (role, CPU s)
        self._lock = threading.Lock()

    def collect(self) -> Iterator[CounterMetricFamily]:
        with self._lock:
            seen: dict[tuple[int, int, str], tuple[str, float]] = {}
            for thread in threading.enumerate():
                if thread.ident is None or thread.native_id is None:
                    continue
                try:
                    cpu = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
                except OSError:  # ended between enumerate() and here
                    continue
                # Thread ids are reused: a new thread under an old id must not look like the
                # old one's CPU going backwards.
                key = (thread.ident, thread.native_id, thread.name)
                seen[key] = (thread_role(thread.name), cpu)
            for key, (role, cpu) in self._last.items():
                if key not in seen:
                    self._ended[role] += cpu
            self._last = seen
            totals = dict(self._ended)
            for role, cpu in seen.values():
                totals[role] += cpu
        family = CounterMetricFamily(
            "switchboard_thread_cpu_seconds",
            "CPU time of the service's threads by role (event loop, Discord player, ...)",
            labels=["role"],
        )
        for role, seconds in totals.items():
            family.add_metric([role], seconds)
        yield family


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
        r.register(_ThreadCpuCollector())
        self.recovery_seconds = Histogram(
            "switchboard_peer_recovery_seconds",
            "From noticing a failed Realtime session to its replacement carrying the tracks",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.state = ServiceStateMetrics(r)

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

    async def refresh(self) -> None:
        """Read the service's state into its gauges; call before `render()` on a scrape."""
        await self.state.refresh()

    def render(self) -> bytes:
        return generate_latest(self.registry)


# -- the service's state, read on scrape --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkQuality:
    """One bridge's link to its room, from its Realtime peer's statistics."""

    guild_id: int
    room: str
    loss_ratio: float | None
    """Packets lost / expected, over the tracks it receives; None before any arrived."""
    jitter_s: float | None
    """The worst interarrival jitter among its received tracks."""
    rtt_s: float | None
    """The worst round trip the SFU reported for its published tracks."""


def link_quality(guild_id: int, room: str, stats: PeerStats) -> LinkQuality:
    received = [t for t in stats.tracks if t.direction == "recv"]
    lost = sum(max(t.lost, 0) for t in received)
    expected = sum(t.packets for t in received) + lost
    jitters = [t.jitter_ms for t in received if t.jitter_ms is not None]
    rtts = [t.rtt_ms for t in stats.tracks if t.rtt_ms is not None]
    return LinkQuality(
        guild_id,
        room,
        loss_ratio=lost / expected if expected else None,
        jitter_s=max(jitters) / 1000 if jitters else None,
        rtt_s=max(rtts) / 1000 if rtts else None,
    )


LinkSource = Callable[[], Awaitable[Iterable[LinkQuality]]]


async def _no_links() -> Iterable[LinkQuality]:
    return ()


class ServiceStateMetrics:
    """Rooms, web participants and link quality per bridge, plus the process collectors."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.rooms = Gauge("switchboard_rooms", "Rooms with at least one member", registry=r)
        self.web_participants = Gauge(
            "switchboard_web_participants", "Browser participants in rooms", registry=r
        )
        labels = ["guild", "room"]
        self.loss = Gauge(
            "switchboard_link_loss_ratio",
            "Share of packets lost on the tracks a bridge receives from its room",
            labels,
            registry=r,
        )
        self.jitter = Gauge(
            "switchboard_link_jitter_seconds",
            "Worst interarrival jitter among the tracks a bridge receives",
            labels,
            registry=r,
        )
        self.rtt = Gauge(
            "switchboard_link_rtt_seconds",
            "Worst round trip to the SFU among the tracks a bridge publishes",
            labels,
            registry=r,
        )
        ProcessCollector(registry=r)
        self._directory: RoomDirectory | None = None
        self._links: LinkSource = _no_links

    def watch_directory(self, directory: RoomDirectory) -> None:
        self._directory = directory

    def watch_links(self, links: LinkSource) -> None:
        """`links()` gives the link quality of each live bridge."""
        self._links = links

    async def refresh(self) -> None:
        if self._directory is not None:
            rooms = await self._directory.rooms()
            web = 0
            for room in rooms:
                members = await self._directory.members(room)
                web += sum(1 for m in members if m.kind is MemberKind.WEB)
            self.rooms.set(len(rooms))
            self.web_participants.set(web)
        # Bridges come and go: export only the live ones, and a figure only where it exists.
        for gauge in (self.loss, self.jitter, self.rtt):
            gauge.clear()
        for link in await self._links():
            labels = {"guild": str(link.guild_id), "room": link.room}
            for gauge, value in (
                (self.loss, link.loss_ratio),
                (self.jitter, link.jitter_s),
                (self.rtt, link.rtt_s),
            ):
                if value is not None:
                    gauge.labels(**labels).set(value)
