"""End-to-end latency and CPU of one bridged Discord channel: fake Discord <-> service <-> room.

Two processes, so that the service's CPU is its own:

  world    (this process) the fake Discord (DAVE v1), the local SFU, 2 fake Discord users in
           the voice channel and 3 plain aiortc participants in the room (A, B, C);
  service  (a child: this script with --service) discord.py 2.7.1 + voice_recv, one
           `bot.voice.VoiceLink` and one `media.bridge.Bridge` with an in-memory directory,
           logged in to the fake and bridging the channel into the room.

Discord -> room. Each fake user sends unique pre-encoded Opus packets paced at 20 ms
(DAVE-encrypted by its davey session, transport-encrypted by the fake); A pulls both users'
`dc:` tracks through an RTP tap. No transcoding happens on this side, so every packet is
found again by its bytes: latency = arrival at A - the fake's UDP send. The packets also
pass the SFU's ingress, which splits that into "service" (fake send -> SFU in: loopback UDP,
discord.py's socket reader, voice_recv, the loop hop, DAVE, the bridge's aiortc sender) and
"SFU -> A". The network baseline is measured at the same time on the same hops minus the
service: a probe N (a client outside the room, so the bridge never hears it) sending all the
time, aiortc send -> SFU -> A's tap. Added by the service = Discord -> room minus that
baseline.

Room -> Discord. A publishes clicks (a 1 ms burst every 200 ms in ~-72 dBFS noise); B and C
publish quiet noise (~-55 dBFS), so the bridge mixes three live streams. The fake peels the
transport and DAVE layers off what the bot sends and decodes it in order; latency of a click
= the fake's arrival time of the frame holding the onset + the onset's offset in it - the
time A's aiortc sender took the click's packet. Opus algorithmic delay is included (two
encoders: A's and the bridge's), as in bench/peer_latency.py.

CPU. The child's utime+stime over the measured window, in % of one core, and per thread.

Scenarios (`--scenario`): **worst** (the above: 2 Discord + 3 room speakers, all the time) and
**conversation** (a 20 s cycle: one speaker at a time, room A 3 s, pause 1 s, Discord alice
3 s, pause 1 s, room B 3 s, pause 2 s, Discord bob 3 s, pause 2 s, room C 2 s; 30 % of the
time nobody speaks). A silent room speaker sends nothing (muted or DTX); a silent Discord user
sends five silence frames and stops, as Discord clients do. In conversation every room speaker
clicks; a detected onset is matched to the click sent just before it, whoever sent it.

Modes (`--modes`): **passthrough** (today: a lone room speaker's Opus goes to Discord as is,
nothing is sent while the room is quiet, no voice_recv speaking timer) and **mix** (main before
issue 14: `SendMode.MIX`, every frame decoded, mixed and encoded, silence frames forever, and
voice_recv's speaking timer put back in the child). By default both run,
one after the other in the same invocation (each with its own world and child), and the
summary compares them: on a shared machine compare the ratio, not runs on different days.

    .venv/bin/python bench/e2e_latency.py                   # worst case, both modes, ~90 s
    .venv/bin/python bench/e2e_latency.py --scenario conversation --seconds 40
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.aiortc_compat import pin_host_addresses

pin_host_addresses(["127.0.0.1"])  # before anything can open a socket: media stays on loopback

import argparse
import asyncio
import datetime
import fractions
import json
import os
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.harness import machine, machine_busy, process_cpu_s
from bench.harness import percentile as pct
from media.audio.opus import OpusDecoder, OpusEncoder
from media.audio.packet import FRAME_SAMPLES, SAMPLE_RATE_HZ

ROOM = "lobby"
FRAME_S = 0.020
CLICK_EVERY = 10  # frames: one click per 200 ms
CLICK_SAMPLES = 48  # 1 ms burst at the start of the click's frame
CLICK_AMPLITUDE = 20_000
NOISE_SIGMA = 8.0  # LSB, ~-72 dBFS: makes every payload unique
QUIET_SIGMA = 60.0  # LSB, ~-55 dBFS: B and C, live streams that never look like a click
DETECT_THRESHOLD = 7_000
SETUP_ALLOWANCE_S = 40.0
IN_FLIGHT_GRACE_S = 1.0
"""After the window, before stopping: a packet sent at its end is not counted as missed."""
GOAL_ADDED_P95_MS = 2.0
GOAL_TO_DISCORD_P95_MS = 40.0
GOAL_CPU_PCT = {"worst": 7.0, "conversation": 3.0}
CONVERSATION = (
    ("A", 3),
    (None, 1),
    ("alice", 3),
    (None, 1),
    ("B", 3),
    (None, 2),
    ("bob", 3),
    (None, 2),
    ("C", 2),
)
"""Who speaks, for how many seconds, in one cycle of the conversation scenario."""
DISCORD_TAIL_FRAMES = 5
"""Silence frames a Discord client sends after speech before it stops sending."""


# -- signals ------------------------------------------------------------------------------------


def make_packets(
    frames: int, seed: int, *, clicks: bool, sigma: float = NOISE_SIGMA
) -> list[bytes]:
    rng = np.random.default_rng(seed)
    pcm = np.clip(rng.standard_normal(frames * FRAME_SAMPLES) * sigma, -32768, 32767).astype(
        np.int16
    )
    if clicks:
        t = np.arange(CLICK_SAMPLES)
        burst = (CLICK_AMPLITUDE * np.sin(2 * np.pi * t / 24) * np.hanning(CLICK_SAMPLES)).astype(
            np.int16
        )
        for index in range(0, frames, CLICK_EVERY):
            pcm[index * FRAME_SAMPLES : index * FRAME_SAMPLES + CLICK_SAMPLES] = burst
    encoder = OpusEncoder(channels=1)  # voip, 32 kb/s, FEC: as Discord clients and browsers send
    packets = [
        encoder.encode(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(frames)
    ]
    encoder.close()
    return packets


class Schedule:
    """Who speaks when, from a common origin (monotonic seconds)."""

    def __init__(self, scenario: str, origin: float) -> None:
        self.scenario = scenario
        self.origin = origin
        self.cycle = sum(seconds for _, seconds in CONVERSATION)

    def speaking(self, name: str, at: float) -> bool:
        if self.scenario == "worst":
            return True
        t = (at - self.origin) % self.cycle
        for who, seconds in CONVERSATION:
            if t < seconds:
                return who == name
            t -= seconds
        return False


def fmt(values: list[float]) -> str:
    worst = max(values, default=float("nan"))
    return (
        f"p50 {pct(values, 50):6.1f}  p95 {pct(values, 95):6.1f}  max {worst:6.1f}  n {len(values)}"
    )


# -- the service (child process) ------------------------------------------------------------------


async def service(cfg: dict[str, Any]) -> None:
    import aiohttp
    import discord
    import discord.gateway
    import discord.http
    import yarl
    from discord.ext import voice_recv

    from bot.voice import SendMode, VoiceLink
    from media.bridge import Bridge, BridgeConfig
    from media.realtime import RealtimeClient
    from media.rooms import InMemoryDirectory, MemberKind, TrackInfo, TrackPublished

    def say(**message: Any) -> None:
        print(json.dumps(message), flush=True)

    if cfg["send_mode"] == "mix":
        restore_speaking_timer()
    discord.http.Route.BASE = cfg["api_base"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(cfg["gateway_url"])
    intents = discord.Intents.default()
    intents.members = True
    tls = ssl.create_default_context(cadata=cfg["cert_pem"])
    client = discord.Client(
        intents=intents, connector=aiohttp.TCPConnector(limit=0, ssl=tls), guild_ready_timeout=0.1
    )
    await client.login(cfg["token"])
    runner = asyncio.create_task(client.connect(), name="discord-client")
    await asyncio.wait_for(client.wait_until_ready(), 20)
    directory = InMemoryDirectory()
    member_id = f"discord:{cfg['guild_id']}"
    async with RealtimeClient(cfg["sfu_url"], cfg["app_id"], cfg["app_secret"]) as realtime:
        bridge = Bridge(ROOM, realtime, directory, BridgeConfig(member_id, "bench"))
        await bridge.start()
        async with directory.events(ROOM) as events:
            for member, session_id, track in cfg["room"]:
                await directory.join(ROOM, member, MemberKind.WEB, member)
                await directory.publish(ROOM, member, TrackInfo(session_id, track, member))
            channel = client.get_channel(cfg["channel_id"])
            vc = await channel.connect(cls=voice_recv.VoiceRecvClient, timeout=20)
            link = VoiceLink(vc, bridge, cfg["guild_id"], send_mode=SendMode(cfg["send_mode"]))
            await link.start()
            say(event="ready", pid=os.getpid())

            async def announce() -> None:
                async for event in events:
                    if isinstance(event, TrackPublished) and event.member_id == member_id:
                        say(
                            event="published",
                            track=event.track.track_name,
                            session_id=event.track.session_id,
                        )

            announcer = asyncio.create_task(announce())
            while line := await asyncio.to_thread(sys.stdin.readline):  # until stdin closes
                if line.strip() == "sample":
                    say(event="threads", cpu=thread_cpu())
            jitter = {  # diagnostics only: the mixdown's per-stream jitter buffers
                f"{stream.key.session_id[:8]}/{stream.key.track_name}": _stats(stream.jitter.stats)
                for stream in bridge.mixdown._streams
            }
            say(
                event="counters",
                voice=link.counters.snapshot(),
                mixdown=_stats(bridge.mixdown.stats),
                jitter=jitter,
            )
            announcer.cancel()
            await asyncio.gather(announcer, return_exceptions=True)
            await link.stop()
        await bridge.stop()
    await client.close()
    await runner


def restore_speaking_timer() -> None:
    """The baseline receives as main did before issue 14: with voice_recv's speaking timer,
    which `bot.voice.compat.ReceiveReader` now replaces (workaround 8). Bench only."""
    from discord.ext.voice_recv.reader import SpeakingTimer

    from bot.voice import compat

    init = compat.ReceiveReader.__init__

    def with_timer(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.speaking_timer = SpeakingTimer(self)

    compat.ReceiveReader.__init__ = with_timer  # type: ignore[method-assign]


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by Python thread name."""
    import re
    import threading

    out: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            seconds = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except OSError:
            continue
        name = re.sub(r"[-:](0x)?[0-9a-f]{6,}$", "", thread.name)
        name = "event loop" if name == "MainThread" else name
        out[name] = out.get(name, 0.0) + seconds
    return out


def _stats(stats: Any) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in stats.__slots__}


# -- the world (this process) -------------------------------------------------------------------


@dataclass
class Stream:
    """One sender's packets: when each left, when it passed the SFU, when A got it."""

    name: str
    packets: list[bytes]
    sent: dict[int, float] = field(default_factory=dict)
    sfu_in: dict[int, float] = field(default_factory=dict)
    received: dict[int, float] = field(default_factory=dict)


class Timeline:
    def __init__(self) -> None:
        self.index: dict[bytes, tuple[Stream, int]] = {}
        self.bot_arrivals: dict[int, float] = {}  # RTP sequence -> arrival at the fake

    def add(self, stream: Stream) -> Stream:
        for i, packet in enumerate(stream.packets):
            if packet in self.index:
                raise SystemExit("pre-encoded payloads are not unique; change the seeds")
            self.index[packet] = (stream, i)
        return stream

    def note(self, payload: bytes, where: str) -> None:
        found = self.index.get(payload)
        if found is not None:
            stream, i = found
            getattr(stream, where).setdefault(i, time.monotonic())


_timelines: list[Timeline] = []  # the running world's, for the instrumented SFU


def instrument_sfu() -> None:
    """Time each known packet's arrival at the SFU (measurement only)."""
    from media.sfu import forwarder

    on_rtp = forwarder.Publication.on_rtp

    async def timed(self: Any, packet: Any, arrival_time_ms: int) -> None:
        _timelines[-1].note(bytes(packet.payload), "sfu_in")
        await on_rtp(self, packet, arrival_time_ms)

    forwarder.Publication.on_rtp = timed  # type: ignore[method-assign]


def replay_track(stream: Stream, schedule: Schedule) -> Any:
    """An aiortc track sending `stream.packets[i]` in slot i (20 ms apart from the schedule's
    origin) while the schedule says the stream speaks, nothing otherwise; timing each send."""
    import av
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    base = fractions.Fraction(1, SAMPLE_RATE_HZ)

    class Replay(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self._i = max(0, int((time.monotonic() - schedule.origin) / FRAME_S))

        async def recv(self) -> av.Packet:
            while not schedule.speaking(stream.name, schedule.origin + self._i * FRAME_S):
                self._i += 1
            if self.readyState != "live" or self._i >= len(stream.packets):
                raise MediaStreamError
            wait = schedule.origin + self._i * FRAME_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            packet = av.Packet(stream.packets[self._i])
            packet.pts = self._i * FRAME_SAMPLES
            packet.time_base = base
            stream.sent[self._i] = time.monotonic()
            self._i += 1
            return packet

    return Replay()


async def discord_sender(user: Any, stream: Stream, schedule: Schedule) -> None:
    from media.audio import OPUS_SILENCE_FRAME

    first = int((time.monotonic() - schedule.origin) / FRAME_S) + 1
    base_timestamp = user.timestamp - first * FRAME_SAMPLES
    quiet = DISCORD_TAIL_FRAMES
    for i in range(first, len(stream.packets)):
        at = schedule.origin + i * FRAME_S
        speaking = schedule.speaking(stream.name, at)
        if not speaking and quiet >= DISCORD_TAIL_FRAMES:
            continue
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        user.timestamp = (
            base_timestamp + i * FRAME_SAMPLES
        ) & 0xFFFFFFFF  # a client's clock runs on
        if speaking:
            quiet = 0
            stream.sent[i] = time.monotonic()
            user.send_opus(stream.packets[i])
        else:
            quiet += 1
            user.send_frame(OPUS_SILENCE_FRAME)


async def world(args: argparse.Namespace, mode: str) -> dict[str, float]:
    from media.sfu import LocalSFU
    from tests.fakes.discord import FakeDiscord
    from tests.support.rtc import Api, Client

    # Enough unique packets for set-up (child start, DAVE, subscriptions) plus the run.
    total_frames = int((SETUP_ALLOWANCE_S + args.warmup + args.seconds) / FRAME_S)
    timeline = Timeline()
    _timelines.append(timeline)
    talk = args.scenario == "conversation"  # B and C click too, one speaker at a time
    alice_s = timeline.add(Stream("alice", make_packets(total_frames, 11, clicks=True)))
    bob_s = timeline.add(Stream("bob", make_packets(total_frames, 12, clicks=True)))
    a_s = timeline.add(Stream("A", make_packets(total_frames, 21, clicks=True)))
    quiet = NOISE_SIGMA if talk else QUIET_SIGMA
    b_s = timeline.add(Stream("B", make_packets(total_frames, 22, clicks=talk, sigma=quiet)))
    c_s = timeline.add(Stream("C", make_packets(total_frames, 23, clicks=talk, sigma=quiet)))
    n_s = timeline.add(Stream("N", make_packets(total_frames, 24, clicks=False)))
    clicking = [a_s, b_s, c_s] if talk else [a_s]
    load_before = os.getloadavg()
    started_utc = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print()
    print(f"=== scenario {args.scenario}, send mode {mode} ===")
    print(f"date -u {started_utc}; loadavg before {' '.join(f'{x:.2f}' for x in load_before)}")
    schedule = Schedule(args.scenario, time.monotonic())

    async with LocalSFU() as sfu, FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Bench")
        channel = guild.add_voice_channel("Lounge")
        alice, bob = fake.add_member(guild, "alice"), fake.add_member(guild, "bob")
        users = [await fake.user_joins_voice(guild, m, channel) for m in (alice, bob)]
        api = Api(sfu.base_url, sfu.app_id, sfu.app_secret)
        a, b, c = Client(api, tap=True), Client(api), Client(api)
        probe = Client(api)  # the network baseline: not in the room, so the bridge never hears it
        always = Schedule("worst", schedule.origin)
        for client, stream, when in (
            (a, a_s, schedule),
            (b, b_s, schedule),
            (c, c_s, schedule),
            (probe, n_s, always),
        ):
            await client.open()
            await client.push(replay_track(stream, when), "mic")

        cfg = {
            "api_base": fake.api_base,
            "gateway_url": fake.gateway_url,
            "token": fake.token,
            "cert_pem": fake.certificate.cert_pem.decode(),
            "guild_id": guild.id,
            "channel_id": channel.id,
            "sfu_url": sfu.base_url,
            "app_id": sfu.app_id,
            "app_secret": sfu.app_secret,
            "room": [
                ["A", a.session_id, "mic"],
                ["B", b.session_id, "mic"],
                ["C", c.session_id, "mic"],
            ],
            "send_mode": mode,
        }
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--service",
            json.dumps(cfg),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        published: dict[str, str] = {}
        final: dict[str, Any] = {}
        samples: asyncio.Queue[dict[str, float]] = asyncio.Queue()
        ready = asyncio.Event()

        async def read_child() -> None:
            assert child.stdout is not None
            async for line in child.stdout:
                message = json.loads(line)
                if message["event"] == "published":
                    published[message["track"]] = message["session_id"]
                elif message["event"] == "ready":
                    ready.set()
                elif message["event"] == "threads":
                    samples.put_nowait(message["cpu"])
                elif message["event"] == "counters":
                    final.update(message)

        reader = asyncio.create_task(read_child())
        senders: list[asyncio.Task[None]] = []
        try:
            await asyncio.wait_for(ready.wait(), 30)
            session = await fake.bot_voice(guild, timeout=30)
            on_udp = session.on_udp

            def timed_on_udp(data: bytes, addr: tuple[str, int]) -> None:
                timeline.bot_arrivals.setdefault(
                    struct.unpack_from(">H", data, 2)[0], time.monotonic()
                )
                on_udp(data, addr)

            session.on_udp = timed_on_udp  # type: ignore[method-assign]
            await fake.dave(channel).wait_for_members({alice.id, bob.id, fake.bot.id}, timeout=30)
            senders = [
                asyncio.create_task(discord_sender(u, s, schedule))
                for u, s in ((users[0], alice_s), (users[1], bob_s))
            ]

            async def tap(packet: Any, arrival_time_ms: int) -> None:
                timeline.note(bytes(packet.payload), "received")

            # A pulls both Discord users and the probe (the network baseline), all through its tap.
            wanted = [
                (f"dc:{guild.id}:{alice.id}", None),
                (f"dc:{guild.id}:{bob.id}", None),
                ("mic", probe.session_id),
            ]
            for name, session_id in wanted:
                for _ in range(400):
                    sid = session_id or published.get(name)
                    if sid is not None:
                        result = await a.pull([(sid, name)])
                        if "errorCode" not in result["tracks"][0]:
                            break
                    await asyncio.sleep(0.05)
                else:
                    raise RuntimeError(f"could not pull {name}")
            for transceiver in a.pc.getTransceivers():
                receiver = transceiver.receiver
                if receiver.track is not None:
                    receiver._handle_rtp_packet = tap  # measurement only: no decoding
            print(f"set up; warm-up {args.warmup:.0f} s, then {args.seconds:.0f} s measured")
            await asyncio.sleep(args.warmup)
            assert child.stdin is not None
            window_start = time.monotonic()
            cpu0 = process_cpu_s(child.pid)
            busy0 = machine_busy()
            child.stdin.write(b"sample\n")
            threads0 = await asyncio.wait_for(samples.get(), 5)
            await asyncio.sleep(args.seconds)
            cpu1 = process_cpu_s(child.pid)
            busy1 = machine_busy()
            child.stdin.write(b"sample\n")
            threads1 = await asyncio.wait_for(samples.get(), 5)
            window_end = time.monotonic()
            load_after = os.getloadavg()
            await asyncio.sleep(IN_FLIGHT_GRACE_S)  # the window's last packets still arrive
        finally:
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
            if child.stdin is not None:
                child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), 20)
            except TimeoutError:
                child.kill()
                await child.wait()
            await asyncio.wait_for(reader, 5)
            final["names"] = {
                client.session_id[:8]: name for client, name in ((a, "A"), (b, "B"), (c, "C"))
            }
            for client in (a, b, c, probe):
                await client.close()
            await api.aclose()
        frames = session.drain_frames()

    busy = (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1) * 100
    return report(
        args,
        mode,
        timeline,
        frames,
        (alice_s, bob_s),
        clicking,
        n_s,
        window_start,
        window_end,
        cpu1 - cpu0,
        {k: threads1.get(k, 0) - threads0.get(k, 0) for k in threads1},
        final,
        started_utc,
        load_before,
        load_after,
        busy,
    )


def in_window(stream: Stream, start: float, end: float) -> list[int]:
    return [i for i, t in stream.sent.items() if start <= t <= end]


def report(
    args: argparse.Namespace,
    mode: str,
    timeline: Timeline,
    frames: list[Any],
    discord_streams: tuple[Stream, ...],
    clicking: list[Stream],
    probe: Stream,
    start: float,
    end: float,
    cpu_s: float,
    threads: dict[str, float],
    final: dict[str, Any],
    started_utc: str,
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
    busy_pct: float,
) -> dict[str, float]:
    wall = end - start
    print()
    print("Discord -> room (per packet: fake UDP send -> A's RTP tap; byte-exact, no transcoding)")
    to_room: list[float] = []
    service_leg: list[float] = []
    sfu_leg: list[float] = []
    missed = 0
    for stream in discord_streams:
        for i in in_window(stream, start, end):
            if i not in stream.received:
                missed += 1
                continue
            to_room.append((stream.received[i] - stream.sent[i]) * 1000)
            if i in stream.sfu_in:
                service_leg.append((stream.sfu_in[i] - stream.sent[i]) * 1000)
                sfu_leg.append((stream.received[i] - stream.sfu_in[i]) * 1000)
    baseline = [
        (probe.received[i] - probe.sent[i]) * 1000
        for i in in_window(probe, start, end)
        if i in probe.received
    ]
    clicks_only = [
        (s.received[i] - s.sent[i]) * 1000
        for s in discord_streams
        for i in in_window(s, start, end)
        if i % CLICK_EVERY == 0 and i in s.received
    ]
    print(f"  total            {fmt(to_room)}  missed {missed}")
    print(f"  clicks only      {fmt(clicks_only)}")
    print(f"    fake -> SFU in {fmt(service_leg)}   (the service, plus two loopback hops)")
    print(f"    SFU in -> A    {fmt(sfu_leg)}")
    print(f"  baseline N -> A  {fmt(baseline)}   (aiortc send -> SFU -> aiortc tap: 'the network')")
    added50 = pct(to_room, 50) - pct(baseline, 50)
    added95 = pct(to_room, 95) - pct(baseline, 95)
    print(f"  added by the service: p50 {added50:.1f} ms, p95 {added95:.1f} ms")

    print()
    names = "/".join(s.name for s in clicking)
    print(
        f"Room -> Discord (clicks: {names}'s aiortc send -> decoded onset at the fake, after "
        "transport + DAVE)"
    )
    decoder = OpusDecoder(channels=2)
    detections: list[tuple[float, float]] = []  # (detection time, the click's send time)
    pushed = sorted(
        (t, i) for stream in clicking for i, t in stream.sent.items() if i % CLICK_EVERY == 0
    )
    dave_frames = plain = undecryptable = 0
    last_onset_frame = -10
    for n, frame in enumerate(sorted(frames, key=lambda f: f.sequence)):
        if frame.opus is None:
            undecryptable += 1
            continue
        dave_frames += frame.dave_encrypted
        plain += not frame.dave_encrypted and frame.opus != b"\xf8\xff\xfe"
        pcm = decoder.decode(frame.opus).reshape(-1, 2)[:, 0]
        hits = np.flatnonzero(np.abs(pcm.astype(np.int32)) > DETECT_THRESHOLD)
        arrival = timeline.bot_arrivals.get(frame.sequence)
        if not hits.size or arrival is None or n - last_onset_frame < 3:
            continue
        last_onset_frame = n
        at = arrival + int(hits[0]) / SAMPLE_RATE_HZ
        before = [t for t, _ in pushed if t <= at]
        if before:
            detections.append((at, before[-1]))
    to_discord = [(at - sent) * 1000 for at, sent in detections if start <= sent <= end]
    if args.verbose:
        print("  per click, in order (ms): " + " ".join(f"{v:.0f}" for v in to_discord))
    expected = sum(1 for s in clicking for i in in_window(s, start, end) if i % CLICK_EVERY == 0)
    print(f"  clicks           {fmt(to_discord)}  of {expected} sent")
    print(
        f"  frames the fake got: {len(frames)} ({dave_frames} DAVE-encrypted, {plain} voiced but "
        "not DAVE, "
        f"{undecryptable} undecryptable)"
    )

    print()
    print(
        "CPU of the service process (1 bridged channel, 2 Discord + 3 room speakers, "
        f"{args.scenario}, "
        f"send mode {mode}) over {wall:.1f} s:"
    )
    print(
        f"  {cpu_s / wall * 100:.1f} % of one core ({cpu_s / wall * 1000:.1f} ms per second); "
        f"machine {busy_pct:.0f} % busy (both CPUs, everyone's load)"
    )
    busiest = sorted(threads.items(), key=lambda kv: -kv[1])[:8]
    print(
        "  by thread: " + ", ".join(f"{name} {s / wall * 100:.1f}%" for name, s in busiest if s > 0)
    )
    if final:
        voice = final.get("voice", {})
        keys = (
            "frames_forwarded",
            "dave_decrypted",
            "dave_failures",
            "frames_sent",
            "frames_passed_through",
            "frames_encoded",
            "silence_sent",
            "send_pauses",
            "frames_suppressed",
            "send_errors",
            "unmapped_buffered",
            "gap_fillers",
        )
        print("  service counters: " + ", ".join(f"{k}={voice.get(k)}" for k in keys))
        print(f"  mixdown: {final.get('mixdown')}")
        keys = (
            "target_ms",
            "depth_ms",
            "underruns",
            "plc_frames",
            "fec_recovered",
            "late_dropped",
            "trimmed",
        )
        names = final.get("names", {})
        for key, stats in final.get("jitter", {}).items():
            name = names.get(key.split("/")[0], key)
            print(
                f"  bridge jitter buffer {name}: " + ", ".join(f"{k}={stats.get(k)}" for k in keys)
            )
    print(f"  loadavg after {' '.join(f'{x:.2f}' for x in load_after)}")

    cpu_pct = cpu_s / wall * 100
    if args.json:
        Path(f"{args.json}.{args.scenario}.{mode}.json").write_text(
            json.dumps(
                {
                    "date": started_utc,
                    "to_room": to_room,
                    "baseline": baseline,
                    "service_leg": service_leg,
                    "to_discord": to_discord,
                    "cpu_pct": cpu_pct,
                    "threads": threads,
                    "load_before": load_before,
                    "load_after": load_after,
                    "final": final,
                }
            )
        )
    return {
        "cpu_pct": cpu_pct,
        "busy_pct": busy_pct,
        "to_room_p95": pct(to_room, 95),
        "added_p95": added95,
        "added_p50": added50,
        "to_discord_p50": pct(to_discord, 50),
        "to_discord_p95": pct(to_discord, 95),
        "clicks": len(to_discord),
        "clicks_sent": expected,
        "missed": missed,
        "load": load_before[0],
    }


def summary(scenario: str, results: dict[str, dict[str, float]]) -> None:
    print()
    print(f"Summary ({scenario}; each mode its own world and service process, one after the other)")
    for mode, r in results.items():
        print(
            f"  {mode:11s} CPU {r['cpu_pct']:5.1f} % of a core (machine {r['busy_pct']:3.0f} % "
            "busy, "
            f"loadavg {r['load']:.2f}); room -> Discord p50 {r['to_discord_p50']:.1f} "
            f"p95 {r['to_discord_p95']:.1f} ms ({r['clicks']:.0f}/{r['clicks_sent']:.0f} clicks); "
            f"Discord -> room added p95 {r['added_p95']:.1f} ms, {r['missed']:.0f} missed"
        )
    if "passthrough" in results and "mix" in results:
        ratio = results["mix"]["cpu_pct"] / max(results["passthrough"]["cpu_pct"], 1e-9)
        print(f"  CPU mix / passthrough: {ratio:.2f}x")
    if "passthrough" in results:
        r = results["passthrough"]
        goal = GOAL_CPU_PCT[scenario]
        checks = (
            (f"CPU <= {goal:.0f} %", r["cpu_pct"] <= goal),
            (
                f"room -> Discord p95 <= {GOAL_TO_DISCORD_P95_MS:.0f} ms",
                r["to_discord_p95"] <= GOAL_TO_DISCORD_P95_MS,
            ),
            (
                f"Discord -> room added p95 <= {GOAL_ADDED_P95_MS:.0f} ms",
                r["added_p95"] <= GOAL_ADDED_P95_MS,
            ),
            ("nothing lost", r["missed"] == 0),
        )
        for what, met in checks:
            print(f"  goal {what}: {'met' if met else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument(
        "--warmup",
        type=float,
        default=8.0,
        help="seconds of audio before measuring (the bridge's jitter buffer settles in ~5 s)",
    )
    parser.add_argument("--json", help="also write raw figures to JSON.<scenario>.<mode>.json")
    parser.add_argument("--scenario", choices=("worst", "conversation"), default="worst")
    parser.add_argument(
        "--modes",
        default="mix,passthrough",
        help="send modes to run, in order (comma-separated: passthrough, mix)",
    )
    parser.add_argument("--verbose", action="store_true", help="print every click's latency")
    parser.add_argument("--service", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.service:
        asyncio.run(service(json.loads(args.service)))
        return 0
    print(machine())
    instrument_sfu()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode not in ("passthrough", "mix"):
            parser.error(f"--modes: unknown send mode {mode!r} (passthrough, mix)")
    results = {mode: asyncio.run(world(args, mode)) for mode in modes}
    summary(args.scenario, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
