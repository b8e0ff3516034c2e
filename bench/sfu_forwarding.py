#!/usr/bin/env python3
"""SFU forwarding cost and latency: byte-exact forwarding (media/sfu) vs decode + re-encode.

    .venv/bin/python bench/sfu_forwarding.py [--publishers 6] [--subscribers 10] [--seconds 20]

Two phases run one after the other in this process, each with N publishers x M subscribers
(every subscriber pulls every publisher, so N*M streams are forwarded):

1. **ours**: an in-process `LocalSFU` (Realtime HTTP API, RTP tap, byte-exact re-heading).
2. **baseline**: an SFU-like relay built the stock aiortc way: the stock `RTCRtpReceiver`
   (jitter buffer + decoder thread) -> decoded frames -> `MediaRelay` -> one re-encoding
   `RTCRtpSender` per subscriber.

Only the SFU/relay runs in this process. The load (publishers replaying Opus packets
encoded once up front, paced at 20 ms; subscribers that receive through an RTP tap and never
decode) runs in a separate process with its own event loop, so `getrusage(RUSAGE_SELF)` here,
sampled over the steady-state window only, is the SFU's CPU alone.

Latency and loss are measured in the load process, on one clock. Each publisher remembers the
send time of every packet by its RTP-timestamp offset (pts). Forwarders rebase RTP timestamps
by a per-subscription constant, so each subscription is calibrated once, before the window:
every publisher inserts one timestamp jump of JUMP_FRAMES frames, and the first packet after
the jump (`delta_ts = 960 * (delta_seq + JUMP_FRAMES)`) pins the constant. Payloads stay valid
Opus; for "ours" every received payload is also checked byte for byte against what was sent.

- CPU ms per stream-second = SFU CPU in the window / (packets that reached subscribers in the
  window x 20 ms). A relay that cannot keep up (delivery rate < 100 % of real time) is
  charged for what it delivered, which is its real cost per stream at saturation.
- latency = subscriber arrival - publisher send, over packets sent in the window.
- lost = packets sent in the window that did not reach a subscriber by the window's end + drain.

ICE is pinned to 127.0.0.1 in both processes and no STUN server is configured: no traffic
leaves 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import fractions
import gc
import io
import multiprocessing as mp
import os
import platform
import pstats
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import itertools

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from bench.harness import machine_busy, process_cpu_s, rtc_config, schedstat
from media.aiortc_compat import install_tap, pin_host_addresses

SAMPLE_RATE = 48_000
FRAME = 960  # samples per 20 ms packet
PTIME = 0.02
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
JUMP_FRAMES = 7
"""The calibration marker: one RTP timestamp jump of this many frames per publisher."""
TS_MOD = 1 << 32
SEQ_MOD = 1 << 16
LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------------------
# configuration shared with the load process
# --------------------------------------------------------------------------------------


@dataclass
class LoadConfig:
    mode: str  # "ours" | "baseline"
    publishers: int
    subscribers: int
    url: str
    app_id: str = ""
    secret: str = ""
    label_lag: int = 0
    """Frames between the publisher's timestamp jump and the first packet showing it."""
    source_frames: int = 250
    bitrate: int = 32_000
    drain_s: float = 1.0
    setup_timeout_s: float = 60.0


# --------------------------------------------------------------------------------------
# load process: publishers and subscribers
# --------------------------------------------------------------------------------------


def encode_source(frames: int, bitrate: int) -> list[bytes]:
    """Mono 20 ms Opus packets (voice settings) of a tone plus noise, encoded once.

    The noise makes every packet distinct, so a payload identifies its position."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = SAMPLE_RATE
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.bit_rate = bitrate
    ctx.time_base = TIME_BASE
    ctx.options = {"application": "voip"}
    rng = np.random.default_rng(20)
    packets: list[bytes] = []
    for index in range(frames + 4):
        t = (np.arange(FRAME) + index * FRAME) / SAMPLE_RATE
        pcm = np.sin(2 * np.pi * 220 * t) * 6000 + rng.normal(0, 800, FRAME)
        samples = pcm.astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = index * FRAME
        frame.time_base = TIME_BASE
        packets.extend(bytes(p) for p in ctx.encode(frame))
    return packets[:frames]


class ReplayTrack(MediaStreamTrack):
    """Replays pre-encoded packets paced at 20 ms; aiortc packs them as-is (no encode).

    Records when each pts was handed to the sender and which payload it carried."""

    kind = "audio"

    def __init__(self, packets: list[bytes], phase: int) -> None:
        super().__init__()
        self._packets = packets
        self._phase = phase
        self._n = 0
        self._start: float | None = None
        self._jump = 0
        self.mark_pending = False
        self.mark_index: int | None = None
        self.sent: dict[int, tuple[float, int]] = {}

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n * PTIME - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.mark_pending:
            self.mark_pending = False
            self._jump += JUMP_FRAMES
            self.mark_index = self._n
        pts = (self._n + self._jump) * FRAME
        index = (self._n + self._phase) % len(self._packets)
        packet = av.Packet(self._packets[index])
        packet.pts = pts
        packet.time_base = TIME_BASE
        self._n += 1
        self.sent[pts] = (time.monotonic(), index)
        return packet

    def pts_of(self, n: int) -> int:
        """pts of the n-th packet, given that the jump happened at mark_index."""
        assert self.mark_index is not None
        return (n + (JUMP_FRAMES if n >= self.mark_index else 0)) * FRAME


class Subscription:
    """One (subscriber, publisher) stream as seen by the subscriber's RTP tap."""

    __slots__ = ("_scanned", "calibrated_at", "offset", "publisher", "records")

    def __init__(self, publisher: int) -> None:
        self.publisher = publisher
        self.records: list[tuple[float, int, int, bytes]] = []
        self.calibrated_at: int | None = None  # index into records
        self.offset: int | None = None  # subscriber ts - publisher pts (mod 2^32)
        self._scanned = 1

    def make_tap(self):
        records = self.records
        monotonic = time.monotonic

        async def tap(packet, arrival_ms: int) -> None:
            records.append((monotonic(), packet.sequence_number, packet.timestamp, packet.payload))

        return tap

    def calibrate(self, track: ReplayTrack, label_lag: int) -> bool:
        if self.offset is not None:
            return True
        if track.mark_index is None:
            return False
        records = self.records
        start, self._scanned = self._scanned, max(len(records), 1)
        for i in range(start, len(records)):
            _, seq0, ts0, _ = records[i - 1]
            _, seq1, ts1, _ = records[i]
            dseq = (seq1 - seq0) % SEQ_MOD
            if dseq != 1:
                continue
            if (ts1 - ts0) % TS_MOD == FRAME * (1 + JUMP_FRAMES):
                self.calibrated_at = i
                self.offset = (ts1 - track.pts_of(track.mark_index + label_lag)) % TS_MOD
                return True
        return False


class LoopLag:
    """How late an event loop wakes up: a task that sleeps PERIOD and records the overshoot.

    A late wake-up means the loop was busy (or the process was not scheduled): every packet
    due in that time waited as long."""

    PERIOD = 0.005

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        monotonic, thread_time = time.monotonic, time.thread_time
        while True:
            before, cpu = monotonic(), thread_time()
            await asyncio.sleep(self.PERIOD)
            # (when, how late, how much of the wait the loop's thread spent running)
            self.samples.append((before, monotonic() - before - self.PERIOD, thread_time() - cpu))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self, t0: float, t1: float) -> dict[str, float]:
        window = [(lag, busy) for t, lag, busy in self.samples if t0 <= t <= t1] or [(0.0, 0.0)]
        lags = np.array([lag for lag, _ in window]) * 1000
        busy = np.array([b for _, b in window]) * 1000
        stalls = lags > 10
        return {
            "p99_ms": float(np.percentile(lags, 99)),
            "max_ms": float(lags.max()),
            "over_10ms": int(stalls.sum()),
            "stalled_ms": float(lags[stalls].sum()),
            # CPU the loop's thread used during those stalls; the rest it was not running.
            "stalled_busy_ms": float(
                np.minimum(busy[stalls], lags[stalls] + self.PERIOD * 1000).sum()
            ),
        }


class GcPauses:
    """Garbage-collector pauses (they stop the event loop), via gc.callbacks."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int, float]] = []  # (start, generation, seconds)
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.monotonic()
        else:
            elapsed = time.monotonic() - self._started
            self.pauses.append((self._started, info["generation"], elapsed))

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def summary(self, t0: float, t1: float) -> dict[str, float]:
        window = [(gen, d * 1000) for t, gen, d in self.pauses if t0 <= t <= t1]
        return {
            "collections": len(window),
            "total_ms": sum(d for _, d in window),
            "max_ms": max((d for _, d in window), default=0.0),
            "gen2": sum(1 for gen, _ in window if gen == 2),
        }


class Http:
    def __init__(self, base: str, secret: str = "") -> None:
        import httpx

        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self.base = base
        self.client = httpx.AsyncClient(timeout=30, headers=headers, trust_env=False)  # no proxies

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = await self.client.request(method, self.base + path, json=body)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{method} {path} -> {response.status_code} {response.text}")
        return response.json()

    async def aclose(self) -> None:
        await self.client.aclose()


class LoadGenerator:
    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.packets = encode_source(cfg.source_frames, cfg.bitrate)
        self.pcs: list[RTCPeerConnection] = []
        self.tracks: list[ReplayTrack] = []
        self.publisher_ids: list[str] = []
        self.subscriptions: list[Subscription] = []
        self.lag = LoopLag()
        self.gc = GcPauses()
        base = f"{cfg.url}/apps/{cfg.app_id}" if cfg.mode == "ours" else cfg.url
        self.http = Http(base, cfg.secret)

    # -- set-up ---------------------------------------------------------------------------

    async def _publish(self, index: int) -> None:
        pc = RTCPeerConnection(rtc_config())
        self.pcs.append(pc)
        track = ReplayTrack(self.packets, phase=index * 37)
        self.tracks[index] = track
        transceiver = pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}
        if self.cfg.mode == "ours":
            session_id = (await self.http.call("POST", "/sessions/new"))["sessionId"]
            result = await self.http.call(
                "POST",
                f"/sessions/{session_id}/tracks/new",
                {
                    "sessionDescription": offer,
                    "tracks": [{"location": "local", "mid": transceiver.mid, "trackName": "mic"}],
                },
            )
            answer = result["sessionDescription"]
            self.publisher_ids[index] = session_id
        else:
            result = await self.http.call("POST", "/publish", {"sdp": offer["sdp"]})
            answer = {"type": "answer", "sdp": result["sdp"]}
            self.publisher_ids[index] = result["id"]
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))

    async def _subscribe_ours(self) -> None:
        pc = RTCPeerConnection(rtc_config())
        self.pcs.append(pc)
        by_transceiver: dict[int, Subscription] = {}
        pending_taps: list = []

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is track and id(transceiver) not in by_transceiver:
                    holder = Subscription(-1)
                    by_transceiver[id(transceiver)] = holder
                    pending_taps.append((transceiver, holder))
                    install_tap(transceiver.receiver, holder.make_tap())

        session_id = (await self.http.call("POST", "/sessions/new"))["sessionId"]
        wanted = {sid: i for i, sid in enumerate(self.publisher_ids)}
        mids: dict[str, int] = {}
        remaining = list(self.publisher_ids)
        deadline = time.monotonic() + self.cfg.setup_timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not pull {len(remaining)} tracks")
            items = [
                {"location": "remote", "sessionId": sid, "trackName": "mic"} for sid in remaining
            ]
            result = await self.http.call(
                "POST", f"/sessions/{session_id}/tracks/new", {"tracks": items}
            )
            if result.get("requiresImmediateRenegotiation"):
                offer = result["sessionDescription"]
                await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
                await pc.setLocalDescription(await pc.createAnswer())
                await self.http.call(
                    "PUT",
                    f"/sessions/{session_id}/renegotiate",
                    {
                        "sessionDescription": {"type": "answer", "sdp": pc.localDescription.sdp},
                    },
                )
            failed = []
            for item in result["tracks"]:
                if "errorCode" in item:
                    if item["errorCode"] != "not_found_track_error":
                        raise RuntimeError(f"pull failed: {item}")
                    failed.append(item["sessionId"])
                else:
                    mids[item["mid"]] = wanted[item["sessionId"]]
            remaining = failed
            if remaining:
                await asyncio.sleep(0.05)
        for transceiver, holder in pending_taps:
            if transceiver.mid in mids:
                holder.publisher = mids[transceiver.mid]
                self.subscriptions.append(holder)
        if len([h for _, h in pending_taps if h.publisher >= 0]) != len(self.publisher_ids):
            raise RuntimeError(
                f"subscriber got {len(pending_taps)} tracks, wanted {len(self.publisher_ids)}"
            )

    async def _subscribe_baseline(self) -> None:
        pc = RTCPeerConnection(rtc_config())
        self.pcs.append(pc)
        for index in range(len(self.publisher_ids)):
            transceiver = pc.addTransceiver("audio", direction="recvonly")
            subscription = Subscription(index)
            install_tap(transceiver.receiver, subscription.make_tap())
            self.subscriptions.append(subscription)
        await pc.setLocalDescription(await pc.createOffer())
        result = await self.http.call(
            "POST", "/subscribe", {"sdp": pc.localDescription.sdp, "publishers": self.publisher_ids}
        )
        await pc.setRemoteDescription(RTCSessionDescription(result["sdp"], "answer"))

    async def setup(self) -> dict[str, Any]:
        started = time.monotonic()
        # Indexed, not appended: the publishers are set up concurrently.
        self.tracks = [None] * self.cfg.publishers  # type: ignore[list-item]
        self.publisher_ids = [""] * self.cfg.publishers
        await asyncio.gather(*(self._publish(i) for i in range(self.cfg.publishers)))
        await self._wait(self._all_connected, "publishers to connect")
        for _ in range(self.cfg.subscribers):
            if self.cfg.mode == "ours":
                await self._subscribe_ours()
            else:
                await self._subscribe_baseline()
        await self._wait(self._all_connected, "subscribers to connect")
        await self._wait(lambda: all(len(s.records) >= 10 for s in self.subscriptions), "media")
        for track in self.tracks:
            track.mark_pending = True
        calibrated = True
        try:
            await self._wait(
                lambda: all(
                    s.calibrate(self.tracks[s.publisher], self.cfg.label_lag)
                    for s in self.subscriptions
                ),
                "calibration",
                timeout=5.0,
            )
        except TimeoutError:
            calibrated = False  # retried after the window (a saturated relay is late)
        return {
            "setup_s": round(time.monotonic() - started, 2),
            "calibrated_before_window": calibrated,
        }

    def _all_connected(self) -> bool:
        return all(pc.connectionState == "connected" for pc in self.pcs)

    async def _wait(self, condition, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.cfg.setup_timeout_s)
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    # -- results --------------------------------------------------------------------------

    def stats(self, t0: float, t1: float) -> dict[str, Any]:
        latencies: list[float] = []
        expected_total = received_total = late_or_lost = mismatched = duplicates = 0
        uncalibrated = 0
        late_sends: list[float] = []
        per_subscription_lost: list[int] = []
        arrived_in_window = 0
        for sub in self.subscriptions:
            arrived_in_window += sum(1 for r in sub.records if t0 <= r[0] <= t1)
        for sub in self.subscriptions:
            track = self.tracks[sub.publisher]
            expected = {pts: v for pts, v in track.sent.items() if t0 <= v[0] <= t1}
            expected_total += len(expected)
            if not sub.calibrate(track, self.cfg.label_lag):
                uncalibrated += 1
                per_subscription_lost.append(len(expected))
                late_or_lost += len(expected)
                continue
            assert sub.calibrated_at is not None and sub.offset is not None
            seen: set[int] = set()
            offset = sub.offset
            for arrival, _seq, ts, payload in sub.records[sub.calibrated_at :]:
                pts = (ts - offset) % TS_MOD
                sent = expected.get(pts)
                if sent is None:
                    continue
                if pts in seen:
                    duplicates += 1
                    continue
                seen.add(pts)
                latencies.append(arrival - sent[0])
                if arrival - sent[0] > 0.010:
                    late_sends.append(sent[0])
                if self.cfg.mode == "ours" and payload != self.packets[sent[1]]:
                    mismatched += 1
            received_total += len(seen)
            per_subscription_lost.append(len(expected) - len(seen))
            late_or_lost += len(expected) - len(seen)
        lat_ms = np.array(latencies) * 1000.0 if latencies else np.array([float("nan")])
        # Are slow packets spread out, or bunched into a few stalls? (100 ms bins of send time)
        late_bins = {int(sent_at // 0.1) for sent_at in late_sends}
        return {
            "arrived_in_window": arrived_in_window,
            "expected": expected_total,
            "received": received_total,
            "lost": late_or_lost,
            "max_lost_per_subscription": max(per_subscription_lost or [0]),
            "mismatched_payloads": mismatched,
            "duplicates": duplicates,
            "uncalibrated_subscriptions": uncalibrated,
            "latency_ms": {
                "p50": float(np.percentile(lat_ms, 50)),
                "p90": float(np.percentile(lat_ms, 90)),
                "p99": float(np.percentile(lat_ms, 99)),
                "max": float(np.max(lat_ms)),
                "mean": float(np.mean(lat_ms)),
            },
            "over_10ms": len(late_sends),
            "over_10ms_bins_100ms": len(late_bins),
            "load_loop_lag": self.lag.summary(t0, t1),
            "load_gc": self.gc.summary(t0, t1),
            "payload_bytes_mean": float(np.mean([len(p) for p in self.packets])),
        }

    async def close(self) -> None:
        await asyncio.gather(*(pc.close() for pc in self.pcs), return_exceptions=True)
        await self.http.aclose()


async def _recv(conn, timeout: float | None = None):
    """Await one message on a multiprocessing Connection without a thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()
    fd = conn.fileno()

    def readable() -> None:
        loop.remove_reader(fd)
        if future.done():
            return
        try:
            future.set_result(conn.recv())
        except BaseException as exc:  # EOFError when the other side died
            future.set_exception(exc)

    loop.add_reader(fd, readable)
    try:
        return await asyncio.wait_for(future, timeout)
    finally:
        loop.remove_reader(fd)


async def _load_async(conn, cfg: LoadConfig) -> None:
    pin_host_addresses([LOOPBACK])
    load = LoadGenerator(cfg)
    load.lag.start()
    load.gc.start()
    try:
        info = await load.setup()
        # The load generator's own full collections (tens of ms with aiortc's heap) would show
        # up as SFU latency: park set-up garbage and collect nothing until the window is over.
        # The SFU process keeps its collector; its pauses are reported.
        gc.collect()
        gc.freeze()
        gc.disable()
        conn.send(("ready", info))
        message = await _recv(conn, timeout=600)
        assert message[0] == "window", message
        _, t0, t1 = message
        # Packets sent in the window get until its end + drain to arrive.
        remaining = t1 + cfg.drain_s - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)
        gc.enable()
        stats = load.stats(t0, t1)
        stats.update(info)
        conn.send(("stats", stats))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise
    finally:
        load.lag.stop()
        load.gc.stop()
        await load.close()


def load_main(conn, cfg: LoadConfig) -> None:
    asyncio.run(_load_async(conn, cfg))


# --------------------------------------------------------------------------------------
# the baseline: stock aiortc receive -> decode -> MediaRelay -> re-encode per subscriber
# --------------------------------------------------------------------------------------


class DecodeRelay:
    """An SFU-like relay done the stock aiortc way (too slow: docs/webrtc-interop.md §1.2).

    POST /publish {sdp} -> {id, sdp}: the publisher's track is received by aiortc's stock
    RTCRtpReceiver (jitter buffer, decoder thread). POST /subscribe {sdp, publishers} -> {sdp}:
    each offered recvonly m-line gets `MediaRelay.subscribe(publisher track)`, which aiortc's
    RTCRtpSender re-encodes to Opus for that subscriber."""

    def __init__(self) -> None:
        from aiortc.contrib.media import MediaRelay

        self.relay = MediaRelay()
        self.pcs: list[RTCPeerConnection] = []
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.url = ""
        self._runner = None

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/publish", self._publish)
        app.router.add_post("/subscribe", self._subscribe)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{LOOPBACK}:{port}"

    async def _publish(self, request):
        from aiohttp import web

        body = await request.json()
        pc = RTCPeerConnection(rtc_config())
        self.pcs.append(pc)
        publisher_id = f"p{len(self.pcs)}"

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tracks[publisher_id] = track

        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"id": publisher_id, "sdp": pc.localDescription.sdp})

    async def _subscribe(self, request):
        from aiohttp import web

        body = await request.json()
        pc = RTCPeerConnection(rtc_config())
        self.pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        for publisher_id in body["publishers"]:  # in m-line order
            pc.addTrack(self.relay.subscribe(self.tracks[publisher_id]))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp})

    async def stop(self) -> None:
        await asyncio.gather(*(pc.close() for pc in self.pcs), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()


def encoder_label_lag() -> int:
    """Frames by which aiortc's decode -> re-encode chain shows a timestamp jump late.

    Measured, not assumed: libopus' 312-sample look-ahead makes the packet after a jump
    carry the previous frame's timeline (the jump shows one packet later)."""
    from aiortc.codecs.opus import OpusDecoder, OpusEncoder
    from aiortc.jitterbuffer import JitterFrame

    packets = encode_source(20, 32_000)
    decoder, encoder = OpusDecoder(), OpusEncoder()
    mark = 10
    labels: list[tuple[int, int]] = []  # (input frame, output RTP timestamp)
    for n, payload in enumerate(packets):
        pts = (n + (JUMP_FRAMES if n >= mark else 0)) * FRAME
        for frame in decoder.decode(JitterFrame(payload, pts)):
            payloads, ts = encoder.encode(frame)
            if payloads:
                labels.append((n, ts))
    for (_, before), (n, after) in itertools.pairwise(labels):
        if after - before == FRAME * (1 + JUMP_FRAMES):
            return n - mark
    raise RuntimeError("timestamp jump not visible through decode + re-encode")


# --------------------------------------------------------------------------------------
# the SFU side: run one phase, measure CPU over the window
# --------------------------------------------------------------------------------------


def _sfu_counters(sfu) -> tuple[int, int]:
    forwarded = dropped = 0
    for session in sfu.registry.sessions:
        for publication in session.publications:
            for subscription in publication.subscriptions:
                forwarded += subscription.forwarded
                dropped += subscription.dropped
    return forwarded, dropped


@dataclass
class PhaseResult:
    mode: str
    publishers: int
    subscribers: int
    window_s: float
    sfu_cpu_s: float
    load_cpu_s: float
    machine_busy_pct: float
    load: dict[str, Any]
    sfu_forwarded: int | None = None
    sfu_dropped: int | None = None
    profile: str = ""
    sfu_loop_lag: dict[str, float] | None = None
    sfu_runqueue_wait_s: float = 0.0
    sfu_sched_cpu_s: float = 0.0
    sfu_gc: dict[str, float] | None = None
    load_runqueue_wait_s: float = 0.0

    @property
    def streams(self) -> int:
        return self.publishers * self.subscribers

    @property
    def stream_seconds(self) -> float:
        """Stream-seconds the SFU delivered during the window (packets that arrived in it)."""
        return self.load["arrived_in_window"] * PTIME

    @property
    def realtime_pct(self) -> float:
        """Delivered packet rate as a share of what N*M real-time streams need."""
        return 100.0 * self.stream_seconds / (self.streams * self.window_s)

    @property
    def cpu_ms_per_stream_s(self) -> float:
        return self.sfu_cpu_s * 1000 / self.stream_seconds if self.stream_seconds else float("inf")

    @property
    def streams_per_core(self) -> float:
        return 1000 / self.cpu_ms_per_stream_s

    @property
    def delivered_pct(self) -> float:
        return 100.0 * self.load["received"] / max(self.load["expected"], 1)


async def run_phase(mode: str, publishers: int, subscribers: int, args) -> PhaseResult:
    cfg = LoadConfig(
        mode=mode, publishers=publishers, subscribers=subscribers, url="", drain_s=args.drain
    )
    if mode == "ours":
        from media.sfu import LocalSFU

        server: Any = LocalSFU()
        await server.start()
        cfg.url, cfg.app_id, cfg.secret = server.base_url, server.app_id, server.app_secret
    else:
        server = DecodeRelay()
        await server.start()
        cfg.url = server.url
        cfg.label_lag = encoder_label_lag()
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    process = ctx.Process(
        target=load_main, args=(child_conn, cfg), name=f"load-{mode}", daemon=True
    )
    process.start()
    try:
        message = await _recv(parent_conn, timeout=cfg.setup_timeout_s + 60)
        if message[0] != "ready":
            raise RuntimeError(f"load process failed during set-up:\n{message[1]}")
        await asyncio.sleep(args.warmup)
        sfu_gc = GcPauses()
        sfu_gc.start()
        sfu_lag = LoopLag() if args.loop_lag else None
        if sfu_lag is not None:
            sfu_lag.start()
        profiler = cProfile.Profile() if args.profile in (mode, "both") else None
        counters0 = _sfu_counters(server) if mode == "ours" else None
        busy0, total0 = machine_busy()
        load0 = process_cpu_s(process.pid)
        sched0, load_sched0 = schedstat(os.getpid()), schedstat(process.pid)
        t0, cpu0 = time.monotonic(), process_cpu_s()
        if profiler is not None:
            profiler.enable()
        await asyncio.sleep(args.seconds)
        if profiler is not None:
            profiler.disable()
        t1, cpu1 = time.monotonic(), process_cpu_s()
        load1 = process_cpu_s(process.pid)
        sched1, load_sched1 = schedstat(os.getpid()), schedstat(process.pid)
        busy1, total1 = machine_busy()
        counters1 = _sfu_counters(server) if mode == "ours" else None
        parent_conn.send(("window", t0, t1))
        message = await _recv(parent_conn, timeout=120)
        if message[0] != "stats":
            raise RuntimeError(f"load process failed:\n{message[1]}")
        result = PhaseResult(
            mode=mode,
            publishers=publishers,
            subscribers=subscribers,
            window_s=t1 - t0,
            sfu_cpu_s=cpu1 - cpu0,
            load_cpu_s=load1 - load0,
            machine_busy_pct=100.0 * (busy1 - busy0) / max(total1 - total0, 1),
            load=message[1],
            sfu_runqueue_wait_s=sched1[1] - sched0[1],
            sfu_sched_cpu_s=sched1[0] - sched0[0],
            load_runqueue_wait_s=load_sched1[1] - load_sched0[1],
        )
        sfu_gc.stop()
        result.sfu_gc = sfu_gc.summary(t0, t1)
        if sfu_lag is not None:
            sfu_lag.stop()
            result.sfu_loop_lag = sfu_lag.summary(t0, t1)
        if counters0 and counters1:
            result.sfu_forwarded = counters1[0] - counters0[0]
            result.sfu_dropped = counters1[1] - counters0[1]
        if profiler is not None:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(args.profile_top)
            stats.sort_stats("cumulative").print_stats(args.profile_top)
            result.profile = out.getvalue()
        return result
    finally:
        await asyncio.get_running_loop().run_in_executor(None, process.join, 30)
        if process.is_alive():
            process.terminate()  # only the load process we started
        await server.stop()


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 1) -> str:
    if value != value:  # nan
        return "n/a"
    return f"{value:,.{digits}f}"


def _lag(summary: dict[str, float] | None) -> str:
    return f"{_fmt(summary['p99_ms'])} / {_fmt(summary['max_ms'])}" if summary else "(--loop-lag)"


def _stalls(summary: dict[str, float] | None) -> str:
    if not summary:
        return "-"
    return f"{summary['over_10ms']}, {summary['stalled_ms']:.0f} ({summary['stalled_busy_ms']:.0f})"


def _gc(summary: dict[str, float] | None) -> str:
    if not summary:
        return "-"
    return (
        f"{summary['collections']} ({summary['gen2']}), "
        f"{summary['total_ms']:.0f} / {summary['max_ms']:.1f}"
    )


TABLE: list[tuple[str, Any]] = [
    ("publishers x subscribers", lambda r: f"{r.publishers} x {r.subscribers}"),
    ("forwarded streams", lambda r: str(r.streams)),
    ("window (s)", lambda r: _fmt(r.window_s, 2)),
    ("SFU CPU in window (s)", lambda r: _fmt(r.sfu_cpu_s, 2)),
    ("  cross-check: scheduler's count (s)", lambda r: _fmt(r.sfu_sched_cpu_s, 2)),
    ("SFU CPU (% of one core)", lambda r: _fmt(100 * r.sfu_cpu_s / r.window_s)),
    ("delivery rate (% of real time)", lambda r: _fmt(r.realtime_pct)),
    ("CPU ms per stream-second", lambda r: _fmt(r.cpu_ms_per_stream_s, 2)),
    ("streams per core (1000/above)", lambda r: _fmt(r.streams_per_core)),
    ("latency p50 (ms)", lambda r: _fmt(r.load["latency_ms"]["p50"], 2)),
    ("latency p90 (ms)", lambda r: _fmt(r.load["latency_ms"]["p90"], 2)),
    ("latency p99 (ms)", lambda r: _fmt(r.load["latency_ms"]["p99"], 2)),
    ("latency max (ms)", lambda r: _fmt(r.load["latency_ms"]["max"], 2)),
    ("packets expected", lambda r: str(r.load["expected"])),
    ("packets lost (or later than drain)", lambda r: str(r.load["lost"])),
    ("delivered by end + drain (%)", lambda r: _fmt(r.delivered_pct, 2)),
    (
        "payload mismatches (byte-exact)",
        lambda r: str(r.load["mismatched_payloads"]) if r.mode == "ours" else "(re-encoded)",
    ),
    ("uncalibrated subscriptions", lambda r: str(r.load["uncalibrated_subscriptions"])),
    (
        "SFU-side forwarded / dropped",
        lambda r: f"{r.sfu_forwarded} / {r.sfu_dropped}" if r.sfu_forwarded is not None else "-",
    ),
    (
        "packets > 10 ms (in 100 ms bins)",
        lambda r: f"{r.load['over_10ms']} ({r.load['over_10ms_bins_100ms']})",
    ),
    ("load loop lag p99 / max (ms)", lambda r: _lag(r.load["load_loop_lag"])),
    ("SFU loop lag p99 / max (ms)", lambda r: _lag(r.sfu_loop_lag)),
    ("SFU stalls > 10 ms: n, ms (own CPU)", lambda r: _stalls(r.sfu_loop_lag)),
    ("load stalls > 10 ms: n, ms (own CPU)", lambda r: _stalls(r.load["load_loop_lag"])),
    ("SFU GC: runs (gen2), total / max ms", lambda r: _gc(r.sfu_gc)),
    ("load GC: runs (gen2), total / max ms", lambda r: _gc(r.load["load_gc"])),
    (
        "SFU / load run-queue wait (ms)",
        lambda r: f"{r.sfu_runqueue_wait_s * 1000:.0f} / {r.load_runqueue_wait_s * 1000:.0f}",
    ),
    ("load process CPU (% of one core)", lambda r: _fmt(100 * r.load_cpu_s / r.window_s)),
    ("machine busy, /proc/stat ticks (%)", lambda r: _fmt(r.machine_busy_pct)),
]


def print_table(results: list[PhaseResult]) -> None:
    rows = [(name, [cell(r) for r in results]) for name, cell in TABLE]
    headers = [r.mode if r.mode == "ours" else "baseline" for r in results]
    width = max(len(name) for name, _ in rows) + 2
    col = max(14, *(len(v) + 2 for _, vals in rows for v in vals))
    print()
    print("".ljust(width) + "".join(h.rjust(col) for h in headers))
    for name, values in rows:
        print(name.ljust(width) + "".join(v.rjust(col) for v in values))
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishers", type=int, default=6)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="steady state before the window")
    parser.add_argument(
        "--drain", type=float, default=1.0, help="time after the window for late packets"
    )
    parser.add_argument(
        "--baseline-publishers", type=int, help="baseline N (default: --publishers)"
    )
    parser.add_argument(
        "--baseline-subscribers", type=int, help="baseline M (default: --subscribers)"
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--profile",
        choices=["ours", "baseline", "both"],
        help="cProfile the SFU event loop over the window (inflates its CPU figures)",
    )
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument(
        "--loop-lag",
        action="store_true",
        help="also watch the SFU event loop's wake-up lag (costs it ~0.3%% of a core)",
    )
    args = parser.parse_args(argv)

    pin_host_addresses([LOOPBACK])
    print(
        f"sfu_forwarding: {args.publishers} publishers x {args.subscribers} subscribers, "
        f"{args.seconds:g} s window, warm-up {args.warmup:g} s; "
        f"python {platform.python_version()}, "
        f"aiortc {_version('aiortc')}, av {av.__version__}, {os.cpu_count()} cpus, "
        f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )

    async def run() -> list[PhaseResult]:
        results = [await run_phase("ours", args.publishers, args.subscribers, args)]
        print(f"  ours done: {results[0].cpu_ms_per_stream_s:.2f} CPU ms/stream-s", flush=True)
        if not args.skip_baseline:
            results.append(
                await run_phase(
                    "baseline",
                    args.baseline_publishers or args.publishers,
                    args.baseline_subscribers or args.subscribers,
                    args,
                )
            )
        return results

    results = asyncio.run(run())
    print_table(results)
    for result in results:
        if result.realtime_pct < 95:
            print(
                f"note: {result.mode} could not keep up with {result.streams} streams: it "
                f"delivered {result.realtime_pct:.0f}% of real time with its process at "
                f"{100 * result.sfu_cpu_s / result.window_s:.0f}% of a core; its queues grow, "
                f"so latency is unbounded and packets later than window end + {args.drain:g} s "
                f"count as lost. Its CPU per stream-second is charged on what it delivered."
            )
    for result in results:
        if result.profile:
            print(f"---- cProfile of the SFU process, {result.mode} (window only) ----")
            print(result.profile)

    ours = results[0]
    p99 = ours.load["latency_ms"]["p99"]
    goals = [
        (
            ">= 60 forwarded streams per core",
            ours.streams_per_core >= 60,
            f"{ours.streams_per_core:.0f}",
        ),
        ("p99 latency < 10 ms", p99 < 10, f"{p99:.2f} ms"),
    ]
    ratio = None
    if len(results) > 1:
        base = results[1]
        ratio = base.cpu_ms_per_stream_s / ours.cpu_ms_per_stream_s
        print(
            f"ratio baseline / ours, CPU per stream-second: {ratio:.1f}x "
            f"({base.cpu_ms_per_stream_s:.2f} / {ours.cpu_ms_per_stream_s:.2f} ms)"
        )
        goals.append((">= 4x cheaper than decode + re-encode", ratio >= 4, f"{ratio:.1f}x"))
    for name, met, value in goals:
        print(f"goal {name}: {'MET' if met else 'MISSED'} ({value})")
    print(
        f"SUMMARY ours {ours.streams} streams: {ours.cpu_ms_per_stream_s:.2f} CPU ms/stream-s "
        f"({ours.streams_per_core:.0f} streams/core), p50 {ours.load['latency_ms']['p50']:.2f} ms, "
        f"p99 {p99:.2f} ms, lost {ours.load['lost']}/{ours.load['expected']}"
        + (
            f"; baseline {results[1].cpu_ms_per_stream_s:.2f} ms/stream-s, "
            f"p99 {results[1].load['latency_ms']['p99']:.0f} ms, lost {results[1].load['lost']}; "
            f"ratio {ratio:.1f}x"
            if ratio is not None
            else ""
        )
        + f"; goals {'all met' if all(m for _, m, _ in goals) else 'NOT all met'}",
        flush=True,
    )
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    sys.exit(main())
