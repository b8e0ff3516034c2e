"""Click latency, publisher -> local SFU -> subscriber: our receive path against aiortc's stock one.

One process runs the local SFU, a publishing `RealtimePeer` and two subscribers of its track:

  ours   RealtimePeer.subscribe -> InboundOpus -> JitterBuffer, popped by a 20 ms playout
         clock (ticks at origin + k * 20 ms of wall clock, no drift; late ticks catch up)
         -> OpusDecoder (decode / decode_fec / decode_plc by PlayoutFrame.kind) -> detection.
         Where a packet lands between two ticks (the clock's phase) is worth 0-20 ms of
         latency and is an accident of set-up, so --clocks (default 4) playout clocks run
         side by side, phases 20/N ms apart, each with its own buffer and decoder, all fed
         the same packets; "ours" figures pool them (a uniform spread of phases).
  stock  a plain aiortc RTCPeerConnection; RemoteStreamTrack.recv() returns what aiortc's
         jitter buffer (prefetch 4) and decoder thread made -> detection

The publisher pushes one pre-encoded 20 ms Opus packet every 20 ms (wall-clock paced); every
10th starts with a click (a 1 ms burst) in near-silent noise (~-72 dBFS, which also makes
every payload unique, so a packet seen anywhere maps back to its push index).

Latency of a click = (time the decoded frame holding the onset was output: after the playout
tick's decode for ours, when recv() returned for stock) + (onset offset within that frame)
- (time its packet was pushed into the OpusSource). Opus' algorithmic delay (the encoder's
lookahead: the onset lands ~324 samples, 6.8 ms, into the frame) is included in both paths.
"rx" rows measure from the packet's arrival at the SFU instead, leaving the sender out.

Loss: aiortc's RTP sender numbers what it sends contiguously, so skipping a push only makes a
timestamp gap (what DTX looks like), not loss; a probe in the warm-up shows it (one push
skipped; sequence and timestamp steps printed). Real loss is one packet dropped in the SFU's
forwarder (a test-only monkeypatch of `media.sfu.forwarder.Subscription.forward`, for both
subscribers): the forwarder keeps the publisher's numbering, so the receivers see a sequence
gap, as their loss counters confirm.

    .venv/bin/python bench/peer_latency.py                    # ~25 s of audio, ~30 s in all
    .venv/bin/python bench/peer_latency.py --spike-ms 200     # plus a 200 ms network delay spike
    .venv/bin/python bench/peer_latency.py --stall-ms 300     # plus a 300 ms event-loop stall
    .venv/bin/python bench/peer_latency.py --dump run.json    # keep the raw timings, then:
    .venv/bin/python bench/peer_latency.py --replay run.json  # our jitter buffer vs variants,
                                                              # on exactly those arrivals
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.aiortc_compat import pin_host_addresses

pin_host_addresses(["127.0.0.1"])  # before anything can open a socket: media stays on loopback

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bench.harness import machine
from bench.harness import percentile as pct
from media.audio.inbound import InboundOpus
from media.audio.jitter import JitterBuffer
from media.audio.opus import OpusDecoder, OpusEncoder
from media.audio.packet import FRAME_SAMPLES, SAMPLE_RATE_HZ, OpusPacket
from media.audio.source import OpusSource
from media.peer import PeerState, RealtimePeer
from media.realtime import RealtimeClient
from media.sfu import LocalSFU
from media.sfu import forwarder as sfu_forwarder

FRAME_S = 0.020
CLICK_EVERY = 10  # frames: one click per 200 ms
CLICK_SAMPLES = 48  # a 1 ms burst at the very start of the click's frame
CLICK_AMPLITUDE = 20_000
NOISE_SIGMA = 8.0  # LSB: about -72 dBFS
DETECT_THRESHOLD = 7_000  # decoded clicks peak ~15 000; Opus pre-echo stays under ~3 600
ONSET_SAMPLES = 324  # where the decoded onset lands (measured; used by --replay only)
TAIL_FRAMES = 25  # stock never releases its last ~15 packets: the last 0.5 s of clicks don't count
AFTER_EARLY_FRAMES = 100  # "first 2 s after the loss"
GOAL_STEADY_P95_MS = 50.0
GOAL_AFTER_LOSS_P95_MS = 60.0
TRACK = "clicks"


# -- signal --------------------------------------------------------------------------------------


def make_packets(frames: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(frames * FRAME_SAMPLES) * NOISE_SIGMA
    pcm = np.clip(noise, -32768, 32767).astype(np.int16)
    t = np.arange(CLICK_SAMPLES)
    burst = (CLICK_AMPLITUDE * np.sin(2 * np.pi * t / 24) * np.hanning(CLICK_SAMPLES)).astype(
        np.int16
    )
    for index in range(0, frames, CLICK_EVERY):
        start = index * FRAME_SAMPLES
        pcm[start : start + CLICK_SAMPLES] = burst
    encoder = OpusEncoder(channels=1)  # voip, 32 kb/s, in-band FEC, as Discord/browsers send
    packets = [
        encoder.encode(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(frames)
    ]
    encoder.close()
    if len(set(packets)) != len(packets):
        raise SystemExit("pre-encoded payloads are not unique; try another --seed")
    return packets


def onset(pcm: np.ndarray) -> int | None:
    hits = np.flatnonzero(np.abs(pcm.astype(np.int32)) > DETECT_THRESHOLD)
    return int(hits[0]) if hits.size else None


# -- bookkeeping ---------------------------------------------------------------------------------


@dataclass
class Detection:
    out: float  # monotonic s the frame holding the onset was output
    onset: int  # samples into that frame
    arrival: float | None  # monotonic s its packet reached the subscriber's RTP handler

    def at(self) -> float:
        return self.out + self.onset / SAMPLE_RATE_HZ


@dataclass
class PathRecord:
    name: str
    detections: dict[int, Detection] = field(default_factory=dict)
    arrivals: dict[int, float] = field(default_factory=dict)
    seqs: dict[int, int] = field(default_factory=dict)
    rtp_ts: dict[int, int] = field(default_factory=dict)
    anomalies: list[str] = field(default_factory=list)

    def saw(self, index: int | None, sequence: int, timestamp: int, arrival: float) -> None:
        if index is not None:
            self.arrivals[index] = arrival
            self.seqs[index] = sequence
            self.rtp_ts[index] = timestamp

    def output(self, index: int | None, kind: str, out: float, pcm: np.ndarray) -> None:
        at = onset(pcm)
        if at is None:
            return
        if index is None or index % CLICK_EVERY:
            if len(self.anomalies) < 20:
                self.anomalies.append(f"onset in a {kind} frame (index {index})")
            return
        if index not in self.detections:
            self.detections[index] = Detection(out, at, self.arrivals.get(index))


@dataclass
class Run:
    packets: list[bytes]
    index_of: dict[bytes, int]
    frames: int
    drop: int  # dropped in the SFU forwarder
    stall_index: int  # before pushing this one the event loop is blocked (--stall-ms)
    stall_s: float
    spike: range  # packets the SFU holds and then forwards at once (--spike-ms)
    probe_skip: int = -1  # not pushed (a timestamp gap, no loss), set during the warm-up
    pushed: dict[int, float] = field(default_factory=dict)
    sfu_in: dict[int, float] = field(default_factory=dict)
    dropped_in_sfu: int = 0
    feeding_done: asyncio.Event = field(default_factory=asyncio.Event)
    ticks: list[tuple[int, float, float, str, int, int, int | None, int]] = field(
        default_factory=list
    )
    """Our playout ticks: clock, due, out, kind, target ms, depth ms, index played, drained."""


# -- SFU instrumentation (test-only, this process only) -------------------------------------------


def instrument_sfu(run: Run) -> None:
    """Time each packet's arrival at the SFU, and drop packet `run.drop` for every subscriber.

    With --spike-ms, packets in `run.spike` are held and forwarded in one burst with the next
    one: a network delay spike, the same for both subscribers.
    """
    on_rtp = sfu_forwarder.Publication.on_rtp
    forward = sfu_forwarder.Subscription.forward
    held: dict[int, list[Any]] = {}

    async def timed_on_rtp(self: Any, packet: Any, arrival_time_ms: int) -> None:
        index = run.index_of.get(bytes(packet.payload))
        if index is not None and index not in run.sfu_in:
            run.sfu_in[index] = time.monotonic()
        await on_rtp(self, packet, arrival_time_ms)

    async def lossy_forward(self: Any, packet: Any, now: float, ntp: int) -> None:
        index = run.index_of.get(bytes(packet.payload))
        if index == run.drop:
            run.dropped_in_sfu += 1
            return
        if index in run.spike:
            held.setdefault(id(self), []).append(packet)
            return
        for late in held.pop(id(self), []):
            await forward(self, late, now, ntp)
        await forward(self, packet, now, ntp)

    sfu_forwarder.Publication.on_rtp = timed_on_rtp  # type: ignore[method-assign]
    sfu_forwarder.Subscription.forward = lossy_forward  # type: ignore[method-assign]


# -- publisher -----------------------------------------------------------------------------------


async def feed(run: Run, source: OpusSource) -> None:
    start = time.monotonic()
    for index in range(run.frames):
        await asyncio.sleep(max(0.0, start + index * FRAME_S - time.monotonic()))
        if index == run.stall_index:
            time.sleep(run.stall_s)  # noqa: ASYNC251 - the point: the whole loop stalls, as under load
        if index == run.probe_skip:
            continue  # not pushed; the next push carries its own, later, timestamp
        run.pushed[index] = time.monotonic()
        source.push(run.packets[index], index * FRAME_SAMPLES)
    run.feeding_done.set()


# -- our receive path ----------------------------------------------------------------------------


async def playout_ours(
    run: Run, inbound: InboundOpus, records: list[PathRecord], buffers: list[JitterBuffer]
) -> None:
    """Playout clock k ticks at origin + k * 20/N ms + n * 20 ms: N clocks, phases 20/N ms apart."""
    clocks = len(buffers)
    decoders = [OpusDecoder(channels=1) for _ in range(clocks)]
    period = FRAME_S / clocks
    origin = time.monotonic()
    tick = 0
    try:
        while True:
            tick += 1
            clock = tick % clocks
            due = origin + tick * period
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            drained = 0
            while (packet := inbound.poll()) is not None:
                drained += 1
                records[0].saw(
                    run.index_of.get(packet.payload),
                    packet.sequence,
                    packet.timestamp,
                    packet.arrival,
                )
                for buffer in buffers:  # the same as each clock draining at its own tick
                    buffer.push(packet)
            jitter, decoder = buffers[clock], decoders[clock]
            frame = jitter.pop(time.monotonic())
            index: int | None = None
            pcm: np.ndarray | None = None
            if frame is None:
                kind = "idle"
            elif frame.kind == "packet":
                assert frame.payload is not None
                kind, index, pcm = (
                    "packet",
                    run.index_of.get(frame.payload),
                    decoder.decode(frame.payload),
                )
            elif frame.kind == "fec":
                assert frame.payload is not None
                following = run.index_of.get(frame.payload)
                kind, index = "fec", (following - 1 if following is not None else None)
                pcm = decoder.decode_fec(frame.payload)
            else:
                kind, pcm = "plc", decoder.decode_plc()
            out = time.monotonic()
            run.ticks.append(
                (
                    clock,
                    due,
                    out,
                    kind,
                    jitter.stats.target_ms,
                    jitter.stats.depth_ms,
                    index,
                    drained,
                )
            )
            if pcm is not None:
                records[clock].output(index, kind, out, pcm)
    finally:
        for decoder in decoders:
            decoder.close()


# -- aiortc's stock receive path -----------------------------------------------------------------


class StockSubscriber:
    """A plain aiortc client of the Realtime API (as tests/support/rtc.py), stock decoding."""

    def __init__(self, base_url: str, app_id: str, secret: str) -> None:
        self._url = f"{base_url}/apps/{app_id}"
        self._http = httpx.AsyncClient(timeout=20, headers={"Authorization": f"Bearer {secret}"})
        # No ICE servers: aiortc's default would ask stun.l.google.com.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tracks: asyncio.Queue[Any] = asyncio.Queue()
        self.receiver: Any = None
        self.session_id = ""
        self.first: tuple[int, int] | None = None  # (RTP timestamp, push index) of the first packet
        self.pc.on("track", self.tracks.put_nowait)

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = await self._http.request(method, self._url + path, json=body)
        response.raise_for_status()
        return response.json()

    async def open(self) -> None:
        self.session_id = (await self._call("POST", "/sessions/new"))["sessionId"]

    def _observe(self, run: Run, record: PathRecord) -> None:
        """Time packets as they reach the receiver (aiortc's own handler still runs)."""
        receiver = next(
            t.receiver for t in self.pc.getTransceivers() if t.receiver.track is not None
        )
        self.receiver = receiver
        handle = receiver._handle_rtp_packet

        async def observed(packet: Any, arrival_time_ms: int) -> None:
            index = run.index_of.get(bytes(packet.payload))
            record.saw(index, packet.sequence_number, packet.timestamp, time.monotonic())
            if self.first is None and index is not None:
                self.first = (packet.timestamp, index)
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = observed  # looked up per packet on the instance

    async def subscribe(self, run: Run, record: PathRecord, session_id: str, name: str) -> Any:
        body = {"tracks": [{"location": "remote", "sessionId": session_id, "trackName": name}]}
        for _ in range(200):
            result = await self._call("POST", f"/sessions/{self.session_id}/tracks/new", body)
            if "errorCode" not in result["tracks"][0]:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"stock pull failed: {result}")
        offer = result["sessionDescription"]
        await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
        track = await asyncio.wait_for(self.tracks.get(), 5)
        self._observe(run, record)  # before the receiver starts, in setLocalDescription
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self._call(
            "PUT",
            f"/sessions/{self.session_id}/renegotiate",
            {"sessionDescription": {"type": "answer", "sdp": self.pc.localDescription.sdp}},
        )
        return track

    def index_of_pts(self, pts: int) -> int | None:
        # aiortc's TimestampMapper makes pts = RTP timestamp - the first packet's; pushes are
        # timestamped index * 960, so the index follows.
        if self.first is None:
            return None
        return self.first[1] + round(pts / FRAME_SAMPLES)

    async def close(self) -> None:
        await self.pc.close()
        await self._http.aclose()


async def consume_stock(stock: StockSubscriber, track: Any, record: PathRecord) -> None:
    while True:
        frame = await track.recv()
        out = time.monotonic()
        pcm = frame.to_ndarray().reshape(-1)[:: len(frame.layout.channels)]  # packed s16: channel 0
        index = stock.index_of_pts(frame.pts) if frame.pts is not None else None
        record.output(index, "stock", out, pcm)


# -- the run -------------------------------------------------------------------------------------


async def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def bench(args: argparse.Namespace) -> int:
    frames = int(args.seconds / FRAME_S)
    warmup = int(args.warmup / FRAME_S)
    # The loss at the midpoint of the measured span, between two clicks.
    drop = (warmup + frames) // 2 // CLICK_EVERY * CLICK_EVERY + CLICK_EVERY // 2
    stall_index = int(args.stall_at / FRAME_S) if args.stall_ms > 0 else -1
    spike_start = int(args.spike_at / FRAME_S)
    spike = range(spike_start, spike_start + int(args.spike_ms / 1000 / FRAME_S))
    packets = make_packets(frames, args.seed)
    run = Run(
        packets,
        {p: i for i, p in enumerate(packets)},
        frames,
        drop,
        stall_index,
        args.stall_ms / 1000,
        spike,
    )
    instrument_sfu(run)
    clocks = [PathRecord(f"ours@{i * 20 / args.clocks:g}ms") for i in range(args.clocks)]
    for record in clocks[1:]:
        record.arrivals, record.seqs, record.rtp_ts = (
            clocks[0].arrivals,
            clocks[0].seqs,
            clocks[0].rtp_ts,
        )
    stock_rec = PathRecord("stock")
    buffers = [JitterBuffer() for _ in range(args.clocks)]
    print(machine())
    print(
        f"audio {args.seconds:.0f} s (warm-up {args.warmup:.0f} s), a click every "
        f"{CLICK_EVERY * 20} ms, "
        f"packet {drop} dropped in the SFU at {drop * FRAME_S:.2f} s"
        + (
            f", event loop stalled {args.stall_ms:.0f} ms at {args.stall_at:.2f} s"
            if stall_index >= 0
            else ""
        )
        + (
            f", packets {spike.start}-{spike.stop - 1} held in the SFU and sent in one burst"
            if spike
            else ""
        )
    )

    tasks: list[asyncio.Task[Any]] = []
    async with (
        LocalSFU() as sfu,
        RealtimeClient(
            sfu.base_url,
            sfu.app_id,
            sfu.app_secret,
        ) as client,
    ):
        publisher, subscriber = RealtimePeer(client), RealtimePeer(client)
        stock = StockSubscriber(sfu.base_url, sfu.app_id, sfu.app_secret)
        try:
            # Everything slow (sessions, certificates, first HTTP calls) before the clock starts.
            await publisher.start()
            await subscriber.start()
            await stock.open()
            source = OpusSource(TRACK)
            await publisher.publish(TRACK, source)
            await wait_until(
                lambda: publisher.state is PeerState.CONNECTED, 10, "publisher never connected"
            )
            started = time.monotonic()
            tasks.append(asyncio.create_task(feed(run, source)))
            inbound = subscriber.inbound(publisher.session_id, TRACK)
            while await subscriber.pull([inbound]):  # noqa: ASYNC110 - a retry, as the reconciler's
                await asyncio.sleep(0.05)
            tasks.append(asyncio.create_task(playout_ours(run, inbound, clocks, buffers)))
            track = await stock.subscribe(run, stock_rec, publisher.session_id, TRACK)
            tasks.append(asyncio.create_task(consume_stock(stock, track, stock_rec)))
            await wait_until(
                lambda: clocks[0].arrivals and stock_rec.arrivals, 10, "no packets received"
            )
            receiving = time.monotonic() - started
            # The skip-push probe goes 1 s after both subscribers receive, inside the warm-up.
            run.probe_skip = (
                int(receiving / FRAME_S) + 50
            ) // CLICK_EVERY * CLICK_EVERY + CLICK_EVERY // 2
            print(
                f"both subscribers receiving {receiving:.2f} s after the first push; "
                f"skip-push probe at packet {run.probe_skip}"
            )
            if run.probe_skip + 2 * CLICK_EVERY >= warmup:
                print("WARNING: set-up ate the warm-up; raise --warmup")
            await run.feeding_done.wait()
            await asyncio.sleep(0.6)
            ours_stats = inbound.stats()
            stock_stats = await stock.receiver.getStats()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await stock.close()
            await subscriber.close()
            await publisher.close()

    report(args, run, clocks, stock_rec, buffers, ours_stats, stock_stats)
    if args.dump:
        dump(args.dump, run, clocks, stock_rec)
    return 0


# -- statistics and report -----------------------------------------------------------------------


def seq_step(record: PathRecord, before: int, after: int) -> str:
    if before not in record.seqs or after not in record.seqs:
        return "not seen"
    seq = (record.seqs[after] - record.seqs[before]) & 0xFFFF
    ts = (record.rtp_ts[after] - record.rtp_ts[before]) & 0xFFFFFFFF
    return f"seq +{seq}, ts +{ts}"


@dataclass
class Windows:
    steady: list[int]
    after: list[int]
    after_early: list[int]
    after_late: list[int]

    @classmethod
    def of(cls, frames: int, warmup: int, drop: int, pushed: dict[int, float]) -> Windows:
        clicks = [c for c in range(0, frames - TAIL_FRAMES, CLICK_EVERY) if c in pushed]
        after = [c for c in clicks if c > drop]
        return cls(
            [c for c in clicks if warmup <= c < drop],
            after,
            [c for c in after if c <= drop + AFTER_EARLY_FRAMES],
            [c for c in after if c > drop + AFTER_EARLY_FRAMES],
        )

    def rows(self) -> list[tuple[str, list[int]]]:
        return [
            ("steady (before loss)", self.steady),
            ("after loss (all)", self.after),
            ("after loss, first 2 s", self.after_early),
            ("after loss, 2 s on", self.after_late),
        ]


def latencies(
    records: list[PathRecord], window: list[int], origin: dict[int, float]
) -> list[float]:
    """Pooled over `records` (our clocks), ms from `origin` (push or SFU arrival) to the onset."""
    return [
        (record.detections[c].at() - origin[c]) * 1000
        for record in records
        for c in window
        if c in record.detections and c in origin
    ]


def p50_p95(values: list[float]) -> str:
    return f"{pct(values, 50):5.1f}/{pct(values, 95):<5.1f}"


def report(
    args: argparse.Namespace,
    run: Run,
    clocks: list[PathRecord],
    stock: PathRecord,
    buffers: list[JitterBuffer],
    ours_stats: Any,
    stock_stats: Any,
) -> None:
    win = Windows.of(run.frames, int(args.warmup / FRAME_S), run.drop, run.pushed)
    stock_lost = next(
        (s.packetsLost for s in stock_stats.values() if getattr(s, "type", "") == "inbound-rtp"),
        None,
    )
    seen = clocks[0]  # arrivals are shared by our clocks

    p, d = run.probe_skip, run.drop
    print()
    print("Loss simulation")
    print(
        f"  skip-push probe (packet {p} not pushed): ours {seq_step(seen, p - 1, p + 1)}; "
        f"stock {seq_step(stock, p - 1, p + 1)}"
    )
    print(
        "    -> aiortc's sender numbers packets contiguously: a skipped push is a timestamp gap "
        "(DTX), not loss"
    )
    print(
        f"  SFU drop (packet {d}, dropped for {run.dropped_in_sfu} subscribers): "
        f"ours {seq_step(seen, d - 1, d + 1)}, lost={ours_stats.lost}; "
        f"stock {seq_step(stock, d - 1, d + 1)}, packetsLost={stock_lost}"
    )

    paths = {"ours": clocks, "stock": [stock]}
    print()
    print(
        "Click latency (ms): push -> decoded onset out; 'rx' rows from arrival at the SFU instead."
    )
    print(
        f"'ours' pools {len(clocks)} playout clocks (phases {20 / len(clocks):g} ms apart); "
        "missed counts clicks x clocks."
    )
    print(f"  {'path':9} {'window':24} {'p50':>7} {'p95':>7} {'max':>7} {'n':>4} {'missed':>6}")
    summary: dict[tuple[str, str], list[float]] = {}
    for name, records in paths.items():
        for origin, label in ((run.pushed, name), (run.sfu_in, name + " rx")):
            for window_name, window in win.rows():
                values = latencies(records, window, origin)
                summary[(label, window_name)] = values
                missed = sum(1 for r in records for c in window if c not in r.detections)
                stats = (
                    f"{pct(values, 50):7.1f} {pct(values, 95):7.1f} "
                    f"{max(values, default=float('nan')):7.1f}"
                    f" {len(values):4d}"
                )
                print(f"  {label:9} {window_name:24} {stats} {missed:6d}")
    print(
        "  per clock, steady | after loss, p50/p95: "
        + "   ".join(
            f"{r.name} {p50_p95(latencies([r], win.steady, run.pushed))} | "
            f"{p50_p95(latencies([r], win.after, run.pushed))}"
            for r in clocks
        )
    )

    print()
    print(
        "Where the time goes, p50/p95 ms: push->SFU in | SFU->subscriber RTP handler | "
        "handler->frame out"
    )
    print("(buffering, decode, loop) | onset within the frame")
    for name, records in paths.items():
        for window_name, window in (("steady", win.steady), ("after loss 2 s on", win.after_late)):
            parts: dict[str, list[float]] = {
                "push->sfu": [],
                "sfu->rx": [],
                "rx->out": [],
                "onset": [],
            }
            for record in records:
                for c in window:
                    det = record.detections.get(c)
                    if det is None or c not in run.sfu_in or det.arrival is None:
                        continue
                    parts["push->sfu"].append((run.sfu_in[c] - run.pushed[c]) * 1000)
                    parts["sfu->rx"].append((det.arrival - run.sfu_in[c]) * 1000)
                    parts["rx->out"].append((det.out - det.arrival) * 1000)
                    parts["onset"].append(det.onset / SAMPLE_RATE_HZ * 1000)
            line = " | ".join(f"{k} {p50_p95(v)}" for k, v in parts.items())
            print(f"  {name:5} {window_name:18} {line}")

    lateness = [(out - due) * 1000 for _, due, out, kind, *_ in run.ticks if kind != "idle"]
    stalls = sorted((x for x in lateness if x > 20), reverse=True)
    print()
    print(
        f"Our playout clocks: tick lateness p50 {pct(lateness, 50):.1f} ms, p95 "
        f"{pct(lateness, 95):.1f} ms; "
        f"event-loop stalls (ticks > 20 ms late): {len(stalls)}, worst "
        f"{', '.join(f'{x:.0f}' for x in stalls[:5]) or '-'} ms"
    )
    for clock, (record, buffer) in enumerate(zip(clocks, buffers, strict=True)):
        phases = [
            ((record.detections[c].out - record.detections[c].arrival) * 1000) % 20  # type: ignore[operator]
            for c in win.steady
            if c in record.detections and record.detections[c].arrival is not None
        ]
        kinds: dict[str, int] = {}
        for t in run.ticks:
            if t[0] == clock:
                kinds[t[3]] = kinds.get(t[3], 0) + 1
        s = buffer.stats
        series = " ".join(f"{t[4]}/{t[5]}" for t in [t for t in run.ticks if t[0] == clock][::100])
        print(
            f"  {record.name}: arrival->out mod 20 ms p50 {pct(phases, 50):4.1f}; frames {kinds}; "
            f"target {s.target_ms}, underruns {s.underruns}, fec {s.fec_recovered}, trimmed "
            f"{s.trimmed}, "
            f"late {s.late_dropped}"
        )
        print(f"     target/depth ms every 2 s: {series}")
    print(
        f"  inbound: packets {ours_stats.packets}, lost {ours_stats.lost}, jitter "
        f"{ours_stats.jitter_ms:.2f} ms"
    )

    print()
    print(f"Per click around the loss, ms (- missed): index: {clocks[0].name}/stock")
    cells = []
    for c in win.steady[-3:] + win.after[:17]:
        o, k = clocks[0].detections.get(c), stock.detections.get(c)
        ov = f"{(o.at() - run.pushed[c]) * 1000:.0f}" if o else "-"
        kv = f"{(k.at() - run.pushed[c]) * 1000:.0f}" if k else "-"
        cells.append(f"{c}:{ov}/{kv}")
    for i in range(0, len(cells), 10):
        print("  " + "  ".join(cells[i : i + 10]))
    for record in [*clocks, stock]:
        if record.anomalies:
            print(f"  {record.name} anomalies: {record.anomalies[:5]}")

    print()
    print("Summary (ms)")
    for label in ("ours", "stock", "ours rx", "stock rx"):
        st, af = summary[(label, "steady (before loss)")], summary[(label, "after loss (all)")]
        print(
            f"  {label:9} steady p50 {pct(st, 50):6.1f} p95 {pct(st, 95):6.1f} | "
            f"after loss p50 {pct(af, 50):6.1f} p95 {pct(af, 95):6.1f}"
        )
    o_steady = pct(summary[("ours", "steady (before loss)")], 95)
    o_after = pct(summary[("ours", "after loss (all)")], 95)
    print(
        f"  goal, ours p95 <= {GOAL_STEADY_P95_MS:.0f} steady: "
        f"{'met' if o_steady <= GOAL_STEADY_P95_MS else 'MISSED'}; "
        f"<= {GOAL_AFTER_LOSS_P95_MS:.0f} after loss: "
        f"{'met' if o_after <= GOAL_AFTER_LOSS_P95_MS else 'MISSED'}"
    )


def dump(path: str, run: Run, clocks: list[PathRecord], stock: PathRecord) -> None:
    """Raw timings (monotonic s) for --replay or other offline analysis."""

    def record_data(record: PathRecord) -> dict[str, Any]:
        return {
            "detections": {c: [d.out, d.onset, d.arrival] for c, d in record.detections.items()}
        }

    data = {
        "frames": run.frames,
        "drop": run.drop,
        "probe_skip": run.probe_skip,
        "pushed": run.pushed,
        "sfu_in": run.sfu_in,
        "ticks": run.ticks,
        "received": {
            "arrivals": clocks[0].arrivals,
            "seqs": clocks[0].seqs,
            "rtp_ts": clocks[0].rtp_ts,
        },
        "clocks": [record_data(r) for r in clocks],
        "stock": {**record_data(stock), "arrivals": stock.arrivals},
    }
    Path(path).write_text(json.dumps(data))
    print(f"raw timings written to {path}")


# -- --replay: our jitter buffer on one recorded run ------------------------------------------
#
# Same packets, same arrival times, same tick times as the live run (the playout loop is
# deterministic given those): a check that a recording reproduces, and the base for trying a
# change to media/audio/jitter.py offline against a run that misbehaved.


def replay(path: str, warmup_s: float) -> int:
    data = json.loads(Path(path).read_text())
    received = data["received"]
    arrivals = {int(k): v for k, v in received["arrivals"].items()}
    seqs = {int(k): v for k, v in received["seqs"].items()}
    stamps = {int(k): v for k, v in received["rtp_ts"].items()}
    pushed = {int(k): v for k, v in data["pushed"].items()}
    sfu_in = {int(k): v for k, v in data["sfu_in"].items()}
    clocks = len(data["clocks"])
    live = [{int(k): v[0] for k, v in c["detections"].items()} for c in data["clocks"]]
    order = sorted(arrivals, key=arrivals.__getitem__)
    win = Windows.of(data["frames"], int(warmup_s / FRAME_S), data["drop"], pushed)
    print(f"replay of {path}: {clocks} clocks, {len(data['ticks'])} ticks, {len(order)} packets")
    print(
        f"  {'buffer':30} {'steady p50/p95':>15} {'after p50/p95':>15} {'rx steady':>11} "
        f"{'rx after':>11}"
        f"  plc trimmed missed"
    )
    for name in ("as is",):
        buffers = [JitterBuffer() for _ in range(clocks)]
        out: list[dict[int, float]] = [{} for _ in range(clocks)]
        cursor = 0
        for clock, _due, tick_out, _kind, _target, _depth, _index, drained in data["ticks"]:
            for index in order[cursor : cursor + drained]:
                packet = OpusPacket(
                    str(index).encode(), stamps[index], seqs[index], arrivals[index]
                )
                for buffer in buffers:
                    buffer.push(packet)
            cursor += drained
            frame = buffers[clock].pop(tick_out)
            if (
                frame is not None
                and frame.kind == "packet"
                and int(frame.payload) % CLICK_EVERY == 0
            ):  # type: ignore[arg-type]
                out[clock].setdefault(int(frame.payload), tick_out)  # type: ignore[arg-type]
        if name == "as is":
            worst = max(
                (abs(o[c] - lv[c]) for o, lv in zip(out, live, strict=True) for c in lv if c in o),
                default=0.0,
            )
            print(f"  (as is reproduces the live output times within {worst * 1000:.3f} ms)")

        def lat(
            window: list[int], origin: dict[int, float], out: list[dict[int, float]] = out
        ) -> list[float]:
            onset_s = ONSET_SAMPLES / SAMPLE_RATE_HZ
            return [
                (o[c] + onset_s - origin[c]) * 1000
                for o in out
                for c in window
                if c in o and c in origin
            ]

        st, af = lat(win.steady, pushed), lat(win.after, pushed)
        rst, raf = lat(win.steady, sfu_in), lat(win.after, sfu_in)
        missed = sum(1 for o in out for c in win.steady + win.after if c not in o)
        plc = sum(b.stats.plc_frames for b in buffers)
        trimmed = sum(b.stats.trimmed for b in buffers)
        print(
            f"  {name:30} {p50_p95(st):>15} {p50_p95(af):>15} {p50_p95(rst):>11} {p50_p95(raf):>11}"
            f"  {plc:3d} {trimmed:7d} {missed:6d}"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=25.0, help="audio pushed (default 25)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="left out of the steady window (default 5)"
    )
    parser.add_argument(
        "--stall-ms",
        type=float,
        default=0.0,
        help="block the event loop this long once, before a push (a CPU stall)",
    )
    parser.add_argument(
        "--stall-at", type=float, default=8.0, help="when, in s of audio (default 8)"
    )
    parser.add_argument(
        "--spike-ms",
        type=float,
        default=0.0,
        help="a network delay spike: the SFU holds this much audio, then sends it at once",
    )
    parser.add_argument(
        "--spike-at", type=float, default=8.0, help="when, in s of audio (default 8)"
    )
    parser.add_argument(
        "--clocks", type=int, default=4, help="our playout clocks, phases 20/N ms apart (default 4)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dump", metavar="JSON", help="also write the raw timings there")
    parser.add_argument(
        "--replay", metavar="JSON", help="no run: replay a --dump through the jitter buffer"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("stamina").setLevel(
        logging.ERROR
    )  # the client's retries while the track comes up
    if args.replay:
        return replay(args.replay, args.warmup)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
