#!/usr/bin/env python3
"""Bridge capacity: CPU per bridge, output underruns and end-to-end latency, ours vs naive.

    .venv/bin/python bench/bridge_capacity.py                      # sweep, ~2.5 min
    .venv/bin/python bench/bridge_capacity.py --bridges 15 --naive-bridges 0 --seconds 20
    .venv/bin/python bench/bridge_capacity.py --bridges 20 --reader task --profile ours
    .venv/bin/python bench/bridge_capacity.py --discord-source   # + BridgeSource's Opus encode

Each configuration (mode, K) runs three fresh processes (multiprocessing, spawn):

- **SFU process**: `media.sfu.LocalSFU` on 127.0.0.1 (HTTP API + byte-exact forwarding).
- **load process**: the rooms' plain publishers, each one aiortc connection replaying
  pre-encoded Opus (no encoder) through the Realtime API, as a browser participant would.
- **service process**: the K bridges, the room directory (`InMemoryDirectory`, which also
  lists the load process's publishers), the speaker inputs and the output readers. Its CPU
  time (`getrusage(RUSAGE_SELF)`, all threads) over the steady-state window is "the bridges'".

Rooms have 5 speakers. K bridges make K//2 rooms of two bridges (2 speakers each) plus one
plain publisher, and, when K is odd, one room of one bridge plus three plain publishers; so
every bridge publishes 2 speakers and hears exactly 3. Every speaker is active all the time:
a local speaker gets one pre-encoded 20 ms Opus packet (mono 32 kb/s voip, FEC on; a tone
of its own) pushed every 20 ms with Discord-style RTP timestamps, one feeder task per bridge.
Every bridge's output is read every 20 ms by a paced reader thread, as discord.py's
`AudioPlayer` thread reads an `AudioSource` (`--reader task` uses one asyncio task each).

Modes:

- **ours**: `media.bridge.Bridge` (publish without transcoding, RTP tap, jitter buffers,
  libopus decode, mixer) reading `bridge.read_frame()`.
- **naive** (`NaiveBridge` below): the stock aiortc way. Local speakers' packets are decoded
  (aiortc's `OpusDecoder`) and published as PCM `AudioFrame`s, so aiortc re-encodes them
  (stereo 96 kb/s) and computes RFC 6465 audio levels; remote tracks go through the stock
  `RTCRtpReceiver` (jitter buffer with prefetch 4 + a decoder thread each),
  `aiortc.contrib.media.MediaRelay`, `RemoteStreamTrack.recv()`, a small FIFO per stream
  (plays once 2 frames are queued, at most 6) and a numpy sum clipped to int16. Same
  SFU, rooms, inputs, readers and process layout.

Figures:

- **CPU per bridge** = service CPU seconds in the window / (K x window seconds) x 100, in %
  of one core. It includes the feeders and readers (measured small), not the Discord side
  (DAVE, Opus-encoding the output for Discord: the same in both designs).
- **output underruns**, counted per stream and frame over the window: *concealed* (ours:
  `JitterStats.plc_frames` deltas: the buffer had no packet for a frame) + *silent* (a
  subscribed stream contributed nothing to a read: `Mixdown.playing()` false, or the naive
  FIFO empty) + *late reads* (a read more than 20 ms behind its schedule: a frame Discord
  would get late). Sources never pause, so any of these is an audible glitch.
- **latency**: speaker 0 of every bridge plays a loud 1 kHz burst in one packet of every 100
  (every 2 s); the other bridge of the room finds its onset in its output. Latency =
  (read time of that output frame + onset offset in it) - (push time of the burst packet +
  onset offset in that packet as decoded on its own). Both ends are in the service process
  (one clock). A zero-delay passthrough would score 0. Only rooms with two bridges measure.

ICE is pinned to 127.0.0.1 in every process and no STUN/TURN server is configured for the
bridges and publishers: no traffic leaves 127.0.0.0/8.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import machine_busy, process_cpu_s, rtc_config
from media.aiortc_compat import pin_host_addresses

LOOPBACK = "127.0.0.1"
pin_host_addresses([LOOPBACK])  # first thing in every process (spawned children re-import this)

import argparse
import asyncio
import collections
import contextlib
import cProfile
import fractions
import io
import logging
import math
import multiprocessing as mp
import os
import platform
import pstats
import random
import resource
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAMPLE_RATE = 48_000
FRAME = 960
PTIME = 0.02
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
CYCLE = 100
"""Packets per source loop (2 s; tones are whole cycles per loop, so loops are seamless)."""
MARKER_INDEX = 50
"""Packet of each marker speaker's loop that carries the burst (one burst every 2 s, so a
latency up to MATCH_S still matches its own burst)."""
MATCH_S = 1.9
BASE_AMPLITUDE = 0.08
MARKER_AMPLITUDE = 0.9
DETECT_THRESHOLD = int(0.45 * 32767)
"""Mixed base tones peak near 3 x 0.08 = 0.24 full scale; a burst, even mixed, passes 0.45."""
REFRACTORY_S = 0.3
LATE_READ_S = 0.020
STREAMS_HEARD = 3
SPEAKERS_PER_BRIDGE = 2
TS_MOD = 1 << 32


# --------------------------------------------------------------------------------------
# signals
# --------------------------------------------------------------------------------------


def tone_pcm(frequency_hz: float, index: int, amplitude: float) -> np.ndarray:
    t = (np.arange(FRAME) + index * FRAME) / SAMPLE_RATE
    return (np.sin(2 * np.pi * frequency_hz * t) * amplitude * 32767).astype(np.int16)


def source_pcm(frequency_hz: float, marker: bool) -> list[np.ndarray]:
    frames = [tone_pcm(frequency_hz, i, BASE_AMPLITUDE) for i in range(CYCLE)]
    if marker:
        frames[MARKER_INDEX] = tone_pcm(1000.0, MARKER_INDEX, MARKER_AMPLITUDE)
    return frames


def encode_source(frequency_hz: float, marker: bool) -> list[bytes]:
    """One second of 20 ms mono Opus packets (32 kb/s voip, FEC), encoded once up front.

    Encoded over two loops and the second kept, so the loop seam carries encoder state."""
    from media.audio import OpusEncoder

    encoder = OpusEncoder(channels=1, bitrate_bps=32_000, application="voip", fec=True)
    frames = source_pcm(frequency_hz, marker)
    packets = [encoder.encode(frame) for frame in frames + frames]
    encoder.close()
    return packets[CYCLE:]


def marker_onset_samples(packets: list[bytes]) -> int:
    """Where the burst's onset lands, in samples from the start of packet MARKER_INDEX,
    when the looped packets are decoded on their own (Opus lookahead included)."""
    from media.audio import OpusDecoder

    decoder = OpusDecoder(channels=1)
    pcm = np.concatenate([decoder.decode(p) for p in packets + packets])
    decoder.close()
    second = pcm[CYCLE * FRAME :]
    above = np.flatnonzero(np.abs(second.astype(np.int32)) > DETECT_THRESHOLD)
    if not len(above):
        raise RuntimeError("marker burst not detectable after decoding")
    onset = int(above[0]) - MARKER_INDEX * FRAME
    if not -FRAME <= onset < 2 * FRAME:
        raise RuntimeError(f"marker onset at {onset} samples from its packet: not the burst")
    return onset


def frequency_of(bridge: int, speaker: int) -> float:
    return 200.0 + 20.0 * ((bridge * SPEAKERS_PER_BRIDGE + speaker) % 60)


# --------------------------------------------------------------------------------------
# room plan
# --------------------------------------------------------------------------------------


@dataclass
class Room:
    name: str
    bridges: list[int]
    publishers: int  # plain publishers in this room


def plan_rooms(k: int) -> list[Room]:
    rooms = [Room(f"room{i}", [2 * i, 2 * i + 1], 1) for i in range(k // 2)]
    if k % 2:
        rooms.append(Room(f"room{k // 2}", [k - 1], 3))
    return rooms


def partner_of(rooms: list[Room]) -> dict[int, int]:
    """Listener bridge -> the bridge whose marker speaker it hears."""
    partners = {}
    for room in rooms:
        if len(room.bridges) == 2:
            a, b = room.bridges
            partners[a], partners[b] = b, a
    return partners


# --------------------------------------------------------------------------------------
# process helpers
# --------------------------------------------------------------------------------------


async def _recv(conn, timeout: float) -> Any:
    loop = asyncio.get_running_loop()
    ready = await loop.run_in_executor(None, conn.poll, timeout)
    if not ready:
        raise TimeoutError("no message from child process")
    return conn.recv()


def _quiet_logging() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(processName)s %(levelname)s %(name)s %(message)s"
    )
    with contextlib.suppress(Exception):
        import stamina

        stamina.instrumentation.set_on_retry_hooks([])


# --------------------------------------------------------------------------------------
# SFU process
# --------------------------------------------------------------------------------------


def sfu_main(conn) -> None:
    pin_host_addresses([LOOPBACK])
    _quiet_logging()

    async def run() -> None:
        from media.sfu import LocalSFU

        async with LocalSFU() as sfu:
            conn.send(("ready", sfu.base_url, sfu.app_id, sfu.app_secret))
            await _recv(conn, 3600)  # "stop"

    try:
        asyncio.run(run())
    except Exception:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))


# --------------------------------------------------------------------------------------
# load process: plain publishers
# --------------------------------------------------------------------------------------


class Http:
    def __init__(self, base: str, secret: str) -> None:
        import httpx

        self.base = base
        self.client = httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {secret}"})

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = await self.client.request(method, self.base + path, json=body)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{method} {path} -> {response.status_code} {response.text}")
        return response.json()

    async def aclose(self) -> None:
        await self.client.aclose()


async def _wait(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def load_main(conn, url: str, app_id: str, secret: str, publishers: int) -> None:
    pin_host_addresses([LOOPBACK])
    _quiet_logging()

    async def run() -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from tests.support.opus_source import OpusReplayTrack

        http = Http(f"{url}/apps/{app_id}", secret)
        pcs = []

        async def publish(index: int) -> str:
            pc = RTCPeerConnection(rtc_config())
            pcs.append(pc)
            track = OpusReplayTrack(encode_source(1500.0 + 40.0 * index, marker=False))
            transceiver = pc.addTransceiver(track, direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            session_id = (await http.call("POST", "/sessions/new"))["sessionId"]
            result = await http.call(
                "POST",
                f"/sessions/{session_id}/tracks/new",
                {
                    "sessionDescription": {"type": "offer", "sdp": pc.localDescription.sdp},
                    "tracks": [{"location": "local", "mid": transceiver.mid, "trackName": "mic"}],
                },
            )
            answer = result["sessionDescription"]
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
            return session_id

        try:
            ids = list(await asyncio.gather(*(publish(i) for i in range(publishers))))
            await _wait(
                lambda: all(pc.connectionState == "connected" for pc in pcs), "publishers", 60
            )
            conn.send(("ready", ids))
            await _recv(conn, 3600)  # "stop"
        finally:
            await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
            await http.aclose()

    try:
        asyncio.run(run())
    except Exception:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))


# --------------------------------------------------------------------------------------
# the naive bridge (stock aiortc: decode, MediaRelay, numpy mix, re-encode)
# --------------------------------------------------------------------------------------

NAIVE_PREBUFFER = 2
NAIVE_MAX_QUEUE = 6
NAIVE_SEND_QUEUE = 25


def _naive_classes():
    from aiortc import MediaStreamTrack
    from aiortc.codecs.opus import OpusDecoder as StockOpusDecoder
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.mediastreams import MediaStreamError

    class SpeakerTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.queue: asyncio.Queue = asyncio.Queue()
            self.dropped = 0

        async def recv(self):
            if self.readyState != "live":
                raise MediaStreamError
            return await self.queue.get()

    class Speaker:
        def __init__(self) -> None:
            self.track = SpeakerTrack()
            self.decoder = StockOpusDecoder()
            self.samples = 0

        def push(self, payload: bytes, timestamp: int | None = None) -> None:
            for frame in self.decoder.decode(JitterFrame(payload, timestamp or 0)):
                frame.pts = self.samples
                frame.time_base = TIME_BASE
                self.samples += frame.samples
                queue = self.track.queue
                if queue.qsize() >= NAIVE_SEND_QUEUE:
                    queue.get_nowait()
                    self.track.dropped += 1
                queue.put_nowait(frame)

    return Speaker


class NaiveStream:
    __slots__ = ("dropped", "frames", "playing", "received", "underruns")

    def __init__(self) -> None:
        self.frames: collections.deque[np.ndarray] = collections.deque()
        self.playing = False
        self.received = 0
        self.underruns = 0
        self.dropped = 0


class NaiveBridge:
    """One session + RTCPeerConnection, Cloudflare-example style, decoding everything."""

    def __init__(self, room: str, member_id: str, http: Http, directory, relay) -> None:
        from aiortc import RTCPeerConnection

        self.room = room
        self.member_id = member_id
        self.http = http
        self.directory = directory
        self.relay = relay
        self.pc = RTCPeerConnection(rtc_config())
        self.pc.on("track", self._on_track)
        self.session_id = ""
        self.streams: list[NaiveStream] = []
        self.tasks: list[asyncio.Task] = []
        self.speakers: dict[str, Any] = {}
        self.last_missing = 0
        self._lock = asyncio.Lock()

    def _on_track(self, track) -> None:
        stream = NaiveStream()
        self.streams.append(stream)
        proxy = self.relay.subscribe(track)
        self.tasks.append(asyncio.ensure_future(self._consume(proxy, stream)))

    async def _consume(self, proxy, stream: NaiveStream) -> None:
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                frame = await proxy.recv()
            except MediaStreamError:
                return
            data = frame.to_ndarray().reshape(-1)
            channels = len(frame.layout.channels)
            mono = data[::channels] if channels > 1 else data
            if mono.shape != (FRAME,):
                continue
            stream.received += 1
            if len(stream.frames) >= NAIVE_MAX_QUEUE:
                stream.frames.popleft()
                stream.dropped += 1
            stream.frames.append(np.ascontiguousarray(mono, dtype=np.int16))

    async def start(self, speaker_names: list[str]) -> None:
        from aiortc import RTCSessionDescription

        from media.rooms import MemberKind, TrackInfo

        speaker_cls = _naive_classes()
        self.session_id = (await self.http.call("POST", "/sessions/new"))["sessionId"]
        transceivers = []
        for name in speaker_names:
            speaker = speaker_cls()
            self.speakers[name] = speaker
            transceivers.append((name, self.pc.addTransceiver(speaker.track, direction="sendonly")))
        async with self._lock:
            await self.pc.setLocalDescription(await self.pc.createOffer())
            result = await self.http.call(
                "POST",
                f"/sessions/{self.session_id}/tracks/new",
                {
                    "sessionDescription": {"type": "offer", "sdp": self.pc.localDescription.sdp},
                    "tracks": [
                        {"location": "local", "mid": t.mid, "trackName": n} for n, t in transceivers
                    ],
                },
            )
            answer = result["sessionDescription"]
            await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await self.directory.join(self.room, self.member_id, MemberKind.DISCORD, self.member_id)
        for name in speaker_names:
            await self.directory.publish(
                self.room, self.member_id, TrackInfo(self.session_id, name, name)
            )

    def speaker(self, name: str):
        return self.speakers[name]

    async def subscribe_room(self, timeout: float = 60.0) -> None:
        from aiortc import RTCSessionDescription

        wanted = [
            (t.session_id, t.track_name)
            for m in await self.directory.members(self.room)
            if m.member_id != self.member_id
            for t in m.tracks
        ]
        deadline = time.monotonic() + timeout
        while wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.member_id}: could not pull {wanted}")
            async with self._lock:
                result = await self.http.call(
                    "POST",
                    f"/sessions/{self.session_id}/tracks/new",
                    {
                        "tracks": [
                            {"location": "remote", "sessionId": s, "trackName": n}
                            for s, n in wanted
                        ],
                    },
                )
                if result.get("requiresImmediateRenegotiation"):
                    offer = result["sessionDescription"]
                    await self.pc.setRemoteDescription(
                        RTCSessionDescription(offer["sdp"], offer["type"])
                    )
                    await self.pc.setLocalDescription(await self.pc.createAnswer())
                    await self.http.call(
                        "PUT",
                        f"/sessions/{self.session_id}/renegotiate",
                        {
                            "sessionDescription": {
                                "type": "answer",
                                "sdp": self.pc.localDescription.sdp,
                            },
                        },
                    )
            retry = []
            for item in result.get("tracks", []):
                if item.get("errorCode"):
                    if item["errorCode"] != "not_found_track_error":
                        raise RuntimeError(f"pull failed: {item}")
                    retry.append((item.get("sessionId"), item.get("trackName")))
            wanted = retry
            if wanted:
                await asyncio.sleep(0.1)

    def read_frame(self) -> np.ndarray:
        frames = []
        missing = 0
        for stream in self.streams:
            queue = stream.frames
            if not stream.playing:
                if len(queue) >= NAIVE_PREBUFFER:
                    stream.playing = True
                else:
                    missing += 1
                    continue
            if queue:
                frames.append(queue.popleft())
            else:
                stream.underruns += 1
                stream.playing = False  # rebuffer
                missing += 1
        self.last_missing = missing + max(STREAMS_HEARD - len(self.streams), 0)
        if not frames:
            return np.zeros(FRAME, dtype=np.int16)
        total = np.sum(frames, axis=0, dtype=np.int32)
        return np.clip(total, -32768, 32767).astype(np.int16)

    def all_playing(self) -> bool:
        # Every heard stream has delivered frames (the FIFO may be rebuffering at any moment).
        return len(self.streams) >= STREAMS_HEARD and all(s.received >= 10 for s in self.streams)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.pc.close()


# --------------------------------------------------------------------------------------
# service process: outputs, readers, feeders
# --------------------------------------------------------------------------------------


class OursOutput:
    """`Bridge.read_frame()` plus how many heard streams gave nothing to that read."""

    def __init__(self, bridge) -> None:
        self.bridge = bridge
        self.last_missing = 0

    def read_frame(self) -> np.ndarray:
        mixdown = self.bridge.mixdown
        frame = mixdown.read_frame()
        playing = mixdown.playing()
        self.last_missing = max(STREAMS_HEARD - len(playing), 0) + sum(
            1 for v in playing.values() if not v
        )
        return frame

    def all_playing(self) -> bool:
        playing = self.bridge.mixdown.playing()
        return len(playing) >= STREAMS_HEARD and all(playing.values())


class DiscordOutput:
    """The production send path around an output: `bot.voice.send.BridgeSource.read()` (the
    mix, then a mono 64 kb/s voip Opus encode unless silent), as discord.py's player calls it.
    Every bridge here hears three speakers all the time, so `SendMode.MIX` is what
    passthrough would do too; the output's frame is what the source encodes."""

    def __init__(self, output) -> None:
        from bot.voice.counters import VoiceCounters
        from bot.voice.send import BridgeSource, SendMode

        self.output = output
        self._pcm = np.zeros(FRAME, dtype=np.int16)
        self.source = BridgeSource(self, VoiceCounters(), mode=SendMode.MIX)

    def read_output(self, *, passthrough: bool = True):
        from media.audio.mixdown import MixdownOutput

        self._pcm = self.output.read_frame()
        return MixdownOutput(pcm=self._pcm)

    def wake_on_audio(self, callback) -> None:
        pass  # never paused: SendMode.MIX

    @property
    def last_missing(self) -> int:
        return self.output.last_missing

    def read_frame(self) -> np.ndarray:
        self.source.read()
        return self._pcm

    def all_playing(self) -> bool:
        return self.output.all_playing()


class NullOutput:
    """Harness-only mode: what the feeders and readers cost with no bridge behind them."""

    last_missing = 0

    def __init__(self) -> None:
        self._silence = np.zeros(FRAME, dtype=np.int16)

    def read_frame(self) -> np.ndarray:
        return self._silence

    def all_playing(self) -> bool:
        return True


class NullSpeaker:
    def push(self, payload: bytes, timestamp: int | None = None) -> None:
        pass


@dataclass
class ReaderLog:
    """What one reader saw; lists of (time, value), sliced to the window afterwards."""

    schedule: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    missing: list[tuple[float, int]] = field(default_factory=list)
    detections: list[float] = field(default_factory=list)  # effective onset play time


class Reader:
    """Reads one output every 20 ms from a fixed origin, like discord.py's AudioPlayer."""

    def __init__(self, output, origin: float) -> None:
        self.output = output
        self.origin = origin
        self.log = ReaderLog()
        self.stop = threading.Event()
        self._quiet_until = 0.0

    def _tick(self, index: int) -> None:
        due = self.origin + index * PTIME
        now = time.monotonic()
        frame = self.output.read_frame()
        log = self.log
        log.schedule.append(due)
        log.lateness.append(now - due)
        if self.output.last_missing:
            log.missing.append((now, self.output.last_missing))
        if now >= self._quiet_until and (
            frame.max() > DETECT_THRESHOLD or frame.min() < -DETECT_THRESHOLD
        ):
            onset = int(np.argmax(np.abs(frame.astype(np.int32)) > DETECT_THRESHOLD))
            log.detections.append(now + onset / SAMPLE_RATE)
            self._quiet_until = now + REFRACTORY_S

    def run_thread(self) -> None:
        index = 0
        while not self.stop.is_set():
            self._tick(index)
            index += 1
            time.sleep(max(0.0, self.origin + index * PTIME - time.monotonic()))

    async def run_task(self) -> None:
        index = 0
        while not self.stop.is_set():
            self._tick(index)
            index += 1
            await asyncio.sleep(max(0.0, self.origin + index * PTIME - time.monotonic()))


@dataclass
class FeedLog:
    lateness: list[float] = field(default_factory=list)


async def feed(
    speakers: list[tuple[Any, list[bytes], list[float] | None]],
    origin: float,
    ts0: int,
    wallclock: bool,
    log: FeedLog,
) -> None:
    """Push one packet per speaker every 20 ms (Discord-style RTP timestamps)."""
    index = 0
    while True:
        await asyncio.sleep(max(0.0, origin + index * PTIME - time.monotonic()))
        now = time.monotonic()
        log.lateness.append(now - (origin + index * PTIME))
        position = index % CYCLE
        timestamp = (ts0 + index * FRAME) % TS_MOD
        for speaker, packets, marks in speakers:
            if marks is not None and position == MARKER_INDEX:
                marks.append(time.monotonic())
            if wallclock:
                speaker.push(packets[position])
            else:
                speaker.push(packets[position], timestamp)
        index += 1


def _probe(feed, payload: bytes, log: list[float]):
    def probed(data: bytes, timestamp: int, sequence: int) -> None:
        if data == payload:
            log.append(time.monotonic())
        feed(data, timestamp, sequence)

    return probed


def _probe_send(recv, payload: bytes, log: list[float]):
    async def probed():
        packet = await recv()
        if bytes(packet) == payload:
            log.append(time.monotonic())
        return packet

    return probed


def _jitter_totals(bridges) -> dict[str, int]:
    totals = collections.Counter()
    for bridge in bridges:
        for stream in bridge.mixdown._streams:  # private: the bench reads per-stream stats
            s = stream.jitter.stats
            totals["received"] += s.received
            totals["late_dropped"] += s.late_dropped
            totals["duplicates"] += s.duplicates
            totals["fec_recovered"] += s.fec_recovered
            totals["plc_frames"] += s.plc_frames
            totals["underruns"] += s.underruns
            totals["trimmed"] += s.trimmed
            totals["restarts"] += s.restarts
            totals["target_ms_sum"] += s.target_ms
            totals["depth_ms_sum"] += s.depth_ms
            totals["streams"] += 1
        totals["decode_errors"] += bridge.mixdown.stats.decode_errors
        for stream in bridge.mixdown._streams:  # private, as above
            st = stream.inbound.stats()
            totals["inbound_lost"] += st.lost
            totals["inbound_dropped"] += st.dropped
        for speaker in bridge._speakers.values():
            totals["source_dropped"] += speaker.source.dropped
            totals["source_queue_sum"] += len(speaker.source._queue)
            totals["sources"] += 1
    return dict(totals)


def _naive_totals(bridges: list[NaiveBridge]) -> dict[str, int]:
    totals = collections.Counter()
    for bridge in bridges:
        for stream in bridge.streams:
            totals["received"] += stream.received
            totals["fifo_underruns"] += stream.underruns
            totals["fifo_dropped"] += stream.dropped
            totals["streams"] += 1
        for speaker in bridge.speakers.values():
            totals["source_dropped"] += speaker.track.dropped
    return dict(totals)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {
            "n": 0,
            "p50": float("nan"),
            "p90": float("nan"),
            "p99": float("nan"),
            "max": float("nan"),
            "mean": float("nan"),
        }
    a = np.asarray(values) * 1000.0
    return {
        "n": len(values),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def service_main(conn, cfg: dict[str, Any]) -> None:
    pin_host_addresses([LOOPBACK])
    _quiet_logging()
    try:
        result = asyncio.run(_service(cfg))
        conn.send(("result", result))
    except Exception:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))


async def _service(cfg: dict[str, Any]) -> dict[str, Any]:
    from media.realtime import RealtimeClient
    from media.rooms import InMemoryDirectory, MemberKind, TrackInfo

    mode: str = cfg["mode"]
    k: int = cfg["bridges"]
    rooms = [Room(**r) for r in cfg["rooms"]]
    partners = partner_of(rooms)
    directory = InMemoryDirectory()
    started = time.monotonic()
    publisher_ids = list(cfg["publisher_ids"])
    for room in rooms:
        for j in range(room.publishers):
            member = f"web-{room.name}-{j}"
            await directory.join(room.name, member, MemberKind.WEB, member)
            await directory.publish(
                room.name, member, TrackInfo(publisher_ids.pop(0), "mic", member)
            )
    room_of = {b: room.name for room in rooms for b in room.bridges}

    packets = {
        (b, s): encode_source(frequency_of(b, s), marker=(s == 0))
        for b in range(k)
        for s in range(SPEAKERS_PER_BRIDGE)
    }
    onset = marker_onset_samples(packets[(0, 0)]) if k else 0
    marks: dict[int, list[float]] = {b: [] for b in range(k)}
    names = [[f"b{b}-spk{s}" for s in range(SPEAKERS_PER_BRIDGE)] for b in range(k)]

    client = None
    http = None
    bridges: list[Any] = []
    outputs: list[Any] = []
    if mode == "ours":
        from media.backoff import Backoff
        from media.bridge import Bridge, BridgeConfig
        from media.peer import PeerConfig

        client = RealtimeClient(
            cfg["url"],
            cfg["app_id"],
            cfg["secret"],
        )
        peer = PeerConfig(recovery=Backoff(initial_s=0.1, max_s=1.0))
        bridges = [
            Bridge(room_of[b], client, directory, BridgeConfig(f"b{b}", f"bridge {b}", peer=peer))
            for b in range(k)
        ]
        await asyncio.gather(*(bridge.start() for bridge in bridges))
        outputs = [OursOutput(bridge) for bridge in bridges]
        speakers = [
            [bridge.speaker(n, display_name=n) for n in names[b]]
            for b, bridge in enumerate(bridges)
        ]
    elif mode == "null":
        outputs = [NullOutput() for _ in range(k)]
        speakers = [[NullSpeaker() for _ in names[b]] for b in range(k)]
    else:
        from aiortc.contrib.media import MediaRelay

        http = Http(f"{cfg['url']}/apps/{cfg['app_id']}", cfg["secret"])
        relay = MediaRelay()
        bridges = [NaiveBridge(room_of[b], f"b{b}", http, directory, relay) for b in range(k)]
        await asyncio.gather(*(bridge.start(names[b]) for b, bridge in enumerate(bridges)))
        outputs = bridges
        speakers = [[bridge.speaker(n) for n in names[b]] for b, bridge in enumerate(bridges)]

    if cfg["discord_source"]:
        outputs = [DiscordOutput(output) for output in outputs]
    # Readers first (a Discord player reads from the moment it connects), then the speakers.
    origin = time.monotonic() + 0.05
    rng = random.Random(7)
    readers = [Reader(output, origin + rng.random() * PTIME) for output in outputs]
    threads: list[threading.Thread] = []
    reader_tasks: list[asyncio.Task] = []
    if cfg["reader"] == "thread":
        for i, reader in enumerate(readers):
            thread = threading.Thread(target=reader.run_thread, name=f"reader-{i}", daemon=True)
            thread.start()
            threads.append(thread)
    else:
        reader_tasks = [asyncio.create_task(reader.run_task()) for reader in readers]
    ts0 = [rng.randrange(TS_MOD) for _ in range(k)]
    if cfg["prime"] and mode == "ours":
        # Publish every speaker with one packet and wait until its send track took it, so
        # the publish delay does not sit in OpusSource's queue for the rest of the run.
        for b in range(k):
            for s in range(SPEAKERS_PER_BRIDGE):
                speakers[b][s].push(packets[(b, s)][-1], (ts0[b] - FRAME) % TS_MOD)
        await _wait(
            lambda: all(sp._published and not sp.source._queue for row in speakers for sp in row),
            "primed speakers to publish",
            90,
        )
    feed_logs = [FeedLog() for _ in range(k)]
    feeders = [
        asyncio.create_task(
            feed(
                [
                    (speakers[b][s], packets[(b, s)], marks[b] if s == 0 else None)
                    for s in range(SPEAKERS_PER_BRIDGE)
                ],
                time.monotonic() + rng.random() * PTIME,
                ts0[b],
                cfg["wallclock_timestamps"],
                feed_logs[b],
            )
        )
        for b in range(k)
    ]
    if mode == "naive":
        await asyncio.gather(*(bridge.subscribe_room() for bridge in bridges))
    await _wait(lambda: all(o.all_playing() for o in outputs), "every bridge to play 3 streams", 90)
    arrivals: dict[int, list[float]] = {listener: [] for listener in partners}
    sent: dict[int, list[float]] = {b: [] for b in range(k)}
    if mode == "ours":
        # Split latency at the listener's RTP tap: when the burst packet reached its InboundOpus.
        for listener, speaker_bridge in partners.items():
            publisher = bridges[speaker_bridge].peer.session_id
            inbound = bridges[listener].peer.inbound(publisher, names[speaker_bridge][0])
            marker_payload = packets[(speaker_bridge, 0)][MARKER_INDEX]
            inbound.feed = _probe(inbound.feed, marker_payload, arrivals[listener])
        for b in range(k):  # ...and when the send track handed it to aiortc's RTP sender
            track = speakers[b][0].source._track  # private, as above
            track.recv = _probe_send(track.recv, packets[(b, 0)][MARKER_INDEX], sent[b])
    setup_s = time.monotonic() - started
    await asyncio.sleep(cfg["warmup"])

    # ---- the window --------------------------------------------------------------------
    profiler = cProfile.Profile() if cfg["profile"] else None
    other_pids = cfg["other_pids"]
    totals = _jitter_totals if mode == "ours" else _naive_totals
    counters0 = totals(bridges)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    others0 = {name: process_cpu_s(pid) for name, pid in other_pids.items()}
    busy0, total0 = machine_busy()
    t0, cpu0 = time.monotonic(), process_cpu_s()
    if profiler is not None:
        profiler.enable()  # Python 3.12's cProfile (sys.monitoring) sees every thread
    await asyncio.sleep(cfg["seconds"])
    if profiler is not None:
        profiler.disable()
    t1, cpu1 = time.monotonic(), process_cpu_s()
    busy1, total1 = machine_busy()
    others1 = {name: process_cpu_s(pid) for name, pid in other_pids.items()}
    counters1 = totals(bridges)
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    threads_alive = threading.active_count()
    await asyncio.sleep(MATCH_S)  # bursts pushed near the end still reach the outputs

    for reader in readers:
        reader.stop.set()
    for thread in threads:
        thread.join(timeout=2)
    for task in [*feeders, *reader_tasks]:
        task.cancel()
    await asyncio.gather(*feeders, *reader_tasks, return_exceptions=True)

    window = t1 - t0
    # underruns and lateness in the window
    concealed = counters1.get("plc_frames", 0) - counters0.get("plc_frames", 0)
    silent = sum(n for r in readers for t, n in r.log.missing if t0 <= t < t1)
    lateness = [
        late
        for r in readers
        for due, late in zip(r.log.schedule, r.log.lateness, strict=True)
        if t0 <= due < t1
    ]
    late_reads = sum(1 for late in lateness if late > LATE_READ_S)
    reads = len(lateness)
    feeder_lateness = [late for log in feed_logs for late in log.lateness]
    # latency: match each listener's detections to its partner's burst pushes
    latencies: list[float] = []
    to_tap: list[float] = []
    to_send: list[float] = []
    send_to_tap: list[float] = []
    tap_to_out: list[float] = []
    expected = detected = 0
    shift = onset / SAMPLE_RATE
    for listener, speaker_bridge in partners.items():
        pushes = [t + shift for t in marks[speaker_bridge]]
        due = [p for p in pushes if t0 <= p - shift < t1]
        expected += len(due)
        detections = readers[listener].log.detections
        for p in due:
            hit = next((d for d in detections if p - 0.005 < d < p + MATCH_S), None)
            if hit is not None:
                detected += 1
                latencies.append(hit - p)
            arrival = next((a for a in arrivals[listener] if p - shift <= a < p + MATCH_S), None)
            handed = next((a for a in sent[speaker_bridge] if p - shift <= a < p + MATCH_S), None)
            if handed is not None:
                to_send.append(handed - (p - shift))
                if arrival is not None:
                    send_to_tap.append(arrival - handed)
            if arrival is not None:
                to_tap.append(arrival - (p - shift))
                if hit is not None:
                    tap_to_out.append(hit - shift - arrival)
    delta = {
        key: counters1.get(key, 0) - counters0.get(key, 0)
        for key in counters1
        if not key.endswith("_sum") and key not in ("streams", "sources")
    }
    streams = counters1.get("streams", 0)
    gauges = {}
    if mode == "ours" and streams:
        gauges = {
            "target_ms_mean": counters1["target_ms_sum"] / streams,
            "depth_ms_mean": counters1["depth_ms_sum"] / streams,
            "source_queue_mean": counters1["source_queue_sum"] / max(counters1["sources"], 1),
        }
    result = {
        "mode": mode,
        "bridges": k,
        "rooms": len(rooms),
        "streams_heard": streams,
        "window_s": window,
        "setup_s": setup_s,
        "cpu_s": cpu1 - cpu0,
        "user_s": usage1.ru_utime - usage0.ru_utime,
        "sys_s": usage1.ru_stime - usage0.ru_stime,
        "ctx_switches": (usage1.ru_nvcsw - usage0.ru_nvcsw) + (usage1.ru_nivcsw - usage0.ru_nivcsw),
        "others_cpu_s": {name: others1[name] - others0[name] for name in other_pids},
        "machine_busy_pct": 100.0 * (busy1 - busy0) / max(total1 - total0, 1),
        "reads": reads,
        "concealed": concealed,
        "silent": silent,
        "late_reads": late_reads,
        "reader_lateness_ms": _percentiles(lateness),
        "feeder_lateness_ms": _percentiles(feeder_lateness),
        "latency_ms": _percentiles(latencies),
        "to_tap_ms": _percentiles(to_tap),
        "to_send_ms": _percentiles(to_send),
        "send_to_tap_ms": _percentiles(send_to_tap),
        "tap_to_out_ms": _percentiles(tap_to_out),
        "markers_expected": expected,
        "markers_detected": detected,
        "counters": delta,
        "gauges": gauges,
        "threads": threads_alive,
        "onset_samples": onset,
        "loadavg": os.getloadavg(),
    }
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(cfg["profile_top"])
        stats.sort_stats("cumulative").print_stats(cfg["profile_top"])
        result["profile"] = out.getvalue()

    # teardown (not measured); bounded so a stuck close cannot hang the run
    async def teardown() -> None:
        await asyncio.gather(*(bridge.stop() for bridge in bridges), return_exceptions=True)
        if client is not None:
            await client.aclose()
        if http is not None:
            await http.aclose()

    with contextlib.suppress(Exception):
        await asyncio.wait_for(teardown(), 15)
    return result


# --------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------


def _stop_child(process, conn) -> None:
    with contextlib.suppress(Exception):
        conn.send("stop")
    process.join(timeout=15)
    if process.is_alive():
        process.terminate()  # only a process this run started, by its handle
        process.join(timeout=5)


async def run_config(mode: str, k: int, args) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    rooms = plan_rooms(k)
    publishers = sum(r.publishers for r in rooms)
    sfu_parent, sfu_child = ctx.Pipe()
    sfu = ctx.Process(target=sfu_main, args=(sfu_child,), name="sfu", daemon=True)
    sfu.start()
    load = load_parent = None
    service = service_parent = None
    try:
        message = await _recv(sfu_parent, 60)
        if message[0] != "ready":
            raise RuntimeError(f"SFU process failed:\n{message[1]}")
        _, url, app_id, secret = message
        load_parent, load_child = ctx.Pipe()
        load = ctx.Process(
            target=load_main,
            args=(load_child, url, app_id, secret, publishers),
            name="load",
            daemon=True,
        )
        load.start()
        message = await _recv(load_parent, 90)
        if message[0] != "ready":
            raise RuntimeError(f"load process failed:\n{message[1]}")
        cfg = {
            "mode": mode,
            "bridges": k,
            "rooms": [r.__dict__ for r in rooms],
            "publisher_ids": message[1],
            "url": url,
            "app_id": app_id,
            "secret": secret,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "reader": args.reader,
            "wallclock_timestamps": args.wallclock_timestamps,
            "prime": args.prime,
            "discord_source": args.discord_source,
            "profile": args.profile in (mode, "both"),
            "profile_top": args.profile_top,
            "other_pids": {"sfu": sfu.pid, "load": load.pid},
        }
        service_parent, service_child = ctx.Pipe()
        service = ctx.Process(
            target=service_main, args=(service_child, cfg), name=f"service-{mode}", daemon=True
        )
        service.start()
        message = await _recv(service_parent, 120 + args.warmup + args.seconds + 30)
        if message[0] != "result":
            raise RuntimeError(f"service process failed:\n{message[1]}")
        result = message[1]
        result["service_pid"] = service.pid
        return result
    finally:
        loop = asyncio.get_running_loop()
        if service is not None:
            await loop.run_in_executor(None, service.join, 30)
            if service.is_alive():
                service.terminate()
                service.join(5)
        if load is not None:
            await loop.run_in_executor(None, _stop_child, load, load_parent)
        await loop.run_in_executor(None, _stop_child, sfu, sfu_parent)


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def per_bridge_pct(r: dict[str, Any]) -> float:
    return 100.0 * r["cpu_s"] / (r["window_s"] * r["bridges"]) if r["bridges"] else float("nan")


def underruns(r: dict[str, Any]) -> int:
    return r["concealed"] + r["silent"] + r["late_reads"]


def _fmt(value: float, digits: int = 1) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def print_table(results: list[dict[str, Any]]) -> None:
    def c(r, key):
        return r["counters"].get(key, 0)

    rows: list[tuple[str, list[str]]] = [
        ("bridges (rooms)", [f"{r['bridges']} ({r['rooms']})" for r in results]),
        (
            "streams heard / published",
            [f"{r['bridges'] * 3} / {r['bridges'] * 2}" for r in results],
        ),
        ("window (s)", [_fmt(r["window_s"], 1) for r in results]),
        ("service CPU (% of one core)", [_fmt(100 * r["cpu_s"] / r["window_s"]) for r in results]),
        ("CPU per bridge (% of one core)", [_fmt(per_bridge_pct(r), 2) for r in results]),
        (
            "  user / system (% of one core)",
            [
                f"{_fmt(100 * r['user_s'] / r['window_s'])} / "
                f"{_fmt(100 * r['sys_s'] / r['window_s'])}"
                for r in results
            ],
        ),
        (
            "  context switches per second",
            [_fmt(r["ctx_switches"] / r["window_s"], 0) for r in results],
        ),
        (
            "CPU ms per heard stream-second",
            [_fmt(1000 * r["cpu_s"] / (r["window_s"] * r["bridges"] * 3), 2) for r in results],
        ),
        ("output reads", [str(r["reads"]) for r in results]),
        ("UNDERRUNS (sum of next three)", [str(underruns(r)) for r in results]),
        ("  concealed frames (PLC)", [str(r["concealed"]) for r in results]),
        ("  silent stream-frames", [str(r["silent"]) for r in results]),
        ("  reads > 20 ms late", [str(r["late_reads"]) for r in results]),
        (
            "reader lateness p50/p99/max (ms)",
            [
                "/".join(_fmt(r["reader_lateness_ms"][p], 1) for p in ("p50", "p99", "max"))
                for r in results
            ],
        ),
        (
            "feeder lateness p99/max (ms)",
            [
                "/".join(_fmt(r["feeder_lateness_ms"][p], 1) for p in ("p99", "max"))
                for r in results
            ],
        ),
        ("latency p50 (ms)", [_fmt(r["latency_ms"]["p50"]) for r in results]),
        ("latency p90 (ms)", [_fmt(r["latency_ms"]["p90"]) for r in results]),
        (
            "latency p99 / max (ms)",
            [f"{_fmt(r['latency_ms']['p99'])} / {_fmt(r['latency_ms']['max'])}" for r in results],
        ),
        (
            "  push -> listener's RTP tap p50/p99",
            [
                f"{_fmt(r['to_tap_ms']['p50'])}/{_fmt(r['to_tap_ms']['p99'])}"
                if r["to_tap_ms"]["n"]
                else "-"
                for r in results
            ],
        ),
        (
            "    push -> RTP sender p50/p99",
            [
                f"{_fmt(r['to_send_ms']['p50'])}/{_fmt(r['to_send_ms']['p99'])}"
                if r["to_send_ms"]["n"]
                else "-"
                for r in results
            ],
        ),
        (
            "    RTP sender -> tap p50/p99",
            [
                f"{_fmt(r['send_to_tap_ms']['p50'])}/{_fmt(r['send_to_tap_ms']['p99'])}"
                if r["send_to_tap_ms"]["n"]
                else "-"
                for r in results
            ],
        ),
        (
            "  RTP tap -> output p50/p99",
            [
                f"{_fmt(r['tap_to_out_ms']['p50'])}/{_fmt(r['tap_to_out_ms']['p99'])}"
                if r["tap_to_out_ms"]["n"]
                else "-"
                for r in results
            ],
        ),
        (
            "bursts detected / expected",
            [f"{r['markers_detected']}/{r['markers_expected']}" for r in results],
        ),
        (
            "late-dropped / dup / FEC / trimmed",
            [
                f"{c(r, 'late_dropped')}/{c(r, 'duplicates')}/"
                f"{c(r, 'fec_recovered')}/{c(r, 'trimmed')}"
                if r["mode"] == "ours"
                else f"fifo drop {c(r, 'fifo_dropped')}"
                for r in results
            ],
        ),
        (
            "inbound lost / source dropped",
            [
                f"{c(r, 'inbound_lost')}/{c(r, 'source_dropped')}"
                if r["mode"] == "ours"
                else f"-/{c(r, 'source_dropped')}"
                for r in results
            ],
        ),
        (
            "jitter target / depth mean (ms)",
            [
                f"{_fmt(r['gauges']['target_ms_mean'], 0)}/{_fmt(r['gauges']['depth_ms_mean'], 0)}"
                if r["gauges"]
                else "-"
                for r in results
            ],
        ),
        (
            "send queue mean (packets/speaker)",
            [_fmt(r["gauges"]["source_queue_mean"], 1) if r["gauges"] else "-" for r in results],
        ),
        (
            "SFU process CPU (% of one core)",
            [_fmt(100 * r["others_cpu_s"]["sfu"] / r["window_s"]) for r in results],
        ),
        (
            "load process CPU (% of one core)",
            [_fmt(100 * r["others_cpu_s"]["load"] / r["window_s"]) for r in results],
        ),
        ("machine busy, all CPUs (%)", [_fmt(r["machine_busy_pct"]) for r in results]),
        ("service threads", [str(r["threads"]) for r in results]),
        ("set-up (s)", [_fmt(r["setup_s"], 1) for r in results]),
    ]
    headers = [
        f"{'harness' if r['mode'] == 'null' else r['mode']} K={r['bridges']}" for r in results
    ]
    width = max(len(name) for name, _ in rows) + 2
    col = max(12, *(len(v) + 2 for _, vals in rows for v in vals), *(len(h) + 2 for h in headers))
    print()
    print("".ljust(width) + "".join(h.rjust(col) for h in headers))
    for name, values in rows:
        print(name.ljust(width) + "".join(v.rjust(col) for v in values))
    print()


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _git_state() -> str:
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            check=False,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--short", "--", "media"],
            capture_output=True,
            check=False,
            text=True,
            timeout=10,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"HEAD {head}" + (
        f", uncommitted in media/: {', '.join(changed)}" if changed else ", media/ clean"
    )


def _ks(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip() and int(x) > 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bridges", default="3,5,10,15,20", help="K for ours: one value or a comma list"
    )
    parser.add_argument(
        "--naive-bridges",
        default="3",
        help="K for the naive bridge (0: skip); it saturates one core at K=5 on a 2-core box",
    )
    parser.add_argument(
        "--harness-bridges",
        default="10",
        help="K for a harness-only run (feeders + readers, no bridges; 0: skip)",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measurement window per configuration"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="steady state before the window")
    parser.add_argument(
        "--reader",
        choices=["thread", "task"],
        default="thread",
        help="paced output reader: a thread per bridge (discord.py) or an asyncio task",
    )
    parser.add_argument(
        "--wallclock-timestamps",
        action="store_true",
        help="push(payload) without RTP timestamps (the bridge derives them from the clock)",
    )
    parser.add_argument(
        "--discord-source",
        action="store_true",
        help="readers call bot.voice.send.BridgeSource.read() (mix + mono 64 kb/s Opus "
        "encode for Discord), the production player path, in every mode",
    )
    parser.add_argument(
        "--prime",
        action="store_true",
        help="ours: publish each speaker with one packet and wait for it before the feed "
        "starts, so the lazy publish (and any backlog it leaves) happens before the window",
    )
    parser.add_argument(
        "--profile",
        choices=["ours", "naive", "both"],
        help="cProfile the service process over the window (inflates its CPU)",
    )
    parser.add_argument("--profile-top", type=int, default=35)
    args = parser.parse_args(argv)
    ours_ks, naive_ks, null_ks = (
        _ks(args.bridges),
        _ks(args.naive_bridges),
        _ks(args.harness_bridges),
    )

    import av

    from media.audio.opus import _libopus

    print(
        f"bridge_capacity: ours K={ours_ks} naive K={naive_ks} harness-only K={null_ks}, "
        f"window {args.seconds:g} s, "
        f"warm-up {args.warmup:g} s, reader={args.reader}, "
        f"timestamps={'wall clock' if args.wallclock_timestamps else 'explicit'}, "
        f"{'primed' if args.prime else 'lazy'} publish, "
        f"output {'BridgeSource.read() (mix + Opus encode)' if args.discord_source else 'PCM'}",
        flush=True,
    )
    print(
        f"python {platform.python_version()}, aiortc {_version('aiortc')}, av {av.__version__}, "
        f"numpy {np.__version__}, {_libopus().opus_get_version_string().decode()}, "
        f"{os.cpu_count()} cpus, loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )

    print(f"code: {_git_state()}", flush=True)
    results: list[dict[str, Any]] = []
    failures: list[str] = []

    async def run_all() -> None:
        for mode, ks in (("null", null_ks), ("ours", ours_ks), ("naive", naive_ks)):
            for k in ks:
                began = time.monotonic()
                try:
                    r = await run_config(mode, k, args)
                except Exception as exc:  # report and go on with the sweep
                    failures.append(f"{mode} K={k}: {exc}")
                    print(f"  {mode} K={k}: FAILED {exc}", flush=True)
                    continue
                results.append(r)
                print(
                    f"  {mode} K={k}: {per_bridge_pct(r):.2f}% of a core per bridge, "
                    f"underruns {underruns(r)}, latency p50 {r['latency_ms']['p50']:.1f} ms, "
                    f"loadavg {r['loadavg'][0]:.2f} ({time.monotonic() - began:.0f} s)",
                    flush=True,
                )

    asyncio.run(run_all())
    if results:
        print_table(results)
    for r in results:
        if "profile" in r:
            print(
                f"---- cProfile of the service process, {r['mode']} K={r['bridges']} "
                f"(window; event loop + reader threads) ----"
            )
            print(r["profile"])
    for failure in failures:
        print(f"FAILED {failure}")

    ours = [r for r in results if r["mode"] == "ours"]
    naive = [r for r in results if r["mode"] == "naive"]
    goals: list[tuple[str, bool, str]] = []
    if ours:
        worst = max(ours, key=per_bridge_pct)
        goals.append(
            (
                "<= 6% of a core per bridge (worst K)",
                per_bridge_pct(worst) <= 6.0,
                f"{per_bridge_pct(worst):.2f}% at K={worst['bridges']}",
            )
        )
        clean = [r["bridges"] for r in ours if underruns(r) == 0]
        best = max(clean, default=0)
        goals.append(
            (
                ">= 15 bridges with zero underruns",
                best >= 15,
                f"largest clean K={best}" if clean else "no clean K",
            )
        )
    ratio = None
    if ours and naive:
        n = naive[0]
        same = [r for r in ours if r["bridges"] == n["bridges"]]
        ref = same[0] if same else min(ours, key=lambda r: r["bridges"])
        ratio = per_bridge_pct(n) / per_bridge_pct(ref)
        print(
            f"ratio naive / ours, CPU per bridge: {ratio:.1f}x "
            f"(naive K={n['bridges']} {per_bridge_pct(n):.2f}% vs ours K={ref['bridges']} "
            f"{per_bridge_pct(ref):.2f}%)"
        )
        goals.append((">= 4x cheaper than the naive bridge", ratio >= 4.0, f"{ratio:.1f}x"))
        harness = [r for r in results if r["mode"] == "null"]
        if harness:
            h = per_bridge_pct(harness[0])
            print(
                f"  net of the harness ({h:.2f}% per bridge for feeders + readers alone): "
                f"{(per_bridge_pct(n) - h) / max(per_bridge_pct(ref) - h, 1e-9):.1f}x "
                f"({per_bridge_pct(n) - h:.2f}% vs {per_bridge_pct(ref) - h:.2f}%)"
            )
    for name, met, value in goals:
        print(f"goal {name}: {'MET' if met else 'MISSED'} ({value})")
    summary = "; ".join(
        f"{r['mode']} K={r['bridges']}: {per_bridge_pct(r):.2f}%/bridge, underruns {underruns(r)}, "
        f"p50 {r['latency_ms']['p50']:.0f} ms"
        for r in results
    )
    print(
        f"SUMMARY {summary}"
        + (f"; ratio {ratio:.1f}x" if ratio else "")
        + f"; goals {'all met' if goals and all(m for _, m, _ in goals) else 'NOT all met'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
