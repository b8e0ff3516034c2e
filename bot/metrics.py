"""Prometheus metrics of the service, in one injectable registry (tests use their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.bridges = Gauge("switchboard_bridges", "Voice channels bridged into rooms", registry=r)
        self.speakers = Gauge("switchboard_speakers", "Discord speakers published into rooms", registry=r)
        self.packets_in = Counter(
            "switchboard_discord_packets_received_total", "Opus packets received from Discord", registry=r
        )
        self.packets_out = Counter(
            "switchboard_discord_frames_sent_total", "20 ms frames sent to Discord", registry=r
        )
        self.decrypt_failures = Counter(
            "switchboard_dave_decrypt_failures_total",
            "DAVE frames that failed to decrypt (replaced by silence)",
            registry=r,
        )
        self.realtime_errors = Counter(
            "switchboard_realtime_errors_total",
            "Realtime API errors by error code",
            ["code"],
            registry=r,
        )
        self.reconnects = Counter(
            "switchboard_reconnects_total", "Connections rebuilt after a failure", ["kind"], registry=r
        )
        self.underruns = Counter(
            "switchboard_output_underruns_total",
            "Output frames with a speaking stream that had nothing to play",
            registry=r,
        )
        self.commands = Counter(
            "switchboard_commands_total", "Slash commands handled", ["command", "outcome"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
