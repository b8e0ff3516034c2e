"""`/metrics` shows where the service's CPU goes, by thread role, and never goes backwards."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry

from bot.metrics import Metrics, thread_role


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def player_cpu(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "switchboard_thread_cpu_seconds_total", {"role": "discord_player"}
    )
    assert value is not None
    return value


def test_threads_are_counted_by_what_they_do_for_the_bridges():
    assert thread_role("MainThread") == "event_loop"
    assert thread_role("audio-player:0x7f0a3c2d1e90") == "discord_player"
    assert thread_role("voice-socket-reader:0x7f0a3c2d1f00") == "discord_socket_reader"
    assert thread_role("packet-router-7fbe3887ee40") == "voice_recv"
    assert thread_role("speaking-timer-7fbe3887f2c0") == "voice_recv"
    assert thread_role("asyncio_0") == "other"


def test_a_player_thread_s_cpu_is_exported_and_kept_after_it_ends():
    metrics = Metrics(CollectorRegistry())
    before = player_cpu(metrics)
    running = threading.Event()
    finish = threading.Event()

    def player() -> None:
        burn(0.2)
        running.set()
        finish.wait(5)

    thread = threading.Thread(target=player, name="audio-player:0xbench")
    thread.start()
    assert running.wait(10)
    during = player_cpu(metrics)
    assert during - before >= 0.19
    finish.set()
    thread.join(5)
    assert player_cpu(metrics) >= during  # banked, not dropped with the thread
