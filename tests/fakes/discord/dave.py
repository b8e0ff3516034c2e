"""The voice server's half of DAVE for one call: MLS external sender and transition bookkeeping.

Every connected client (the bot's voice websocket, or an in-process fake user) is a
`DaveParticipant`. The coordinator never holds group secrets: it relays key packages as Add
proposals, picks one commit per change, announces it (op 29) to the members, sends the Welcome
(op 30) to the joiners and executes the transition (op 22) once everyone said ready (op 23).
One task owns all of it; participants only enqueue events, so nothing runs re-entrantly.

Wire facts in docs/discord-voice.md §5; behaviour checked against discord.py 2.7.1
`DiscordVoiceWebSocket.received_binary_message` and davey 0.1.7.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .mls import ExternalSender, Reader, split_commit_welcome, vec

__all__ = ["DaveCoordinator", "DaveParticipant"]

_log = logging.getLogger(__name__)

# Discord gives clients a few seconds to report ready before executing anyway.
TRANSITION_TIMEOUT_S = 5.0


class DaveParticipant(Protocol):
    """What the coordinator can tell a client. Every method only queues or applies locally."""

    user_id: int

    def send_external_sender(self, package: bytes) -> None: ...
    def send_proposals(self, proposals: bytes) -> None: ...  # op 27 append; V(MLSMessages)
    def send_announce_commit(self, transition_id: int, commit: bytes) -> None: ...
    def send_welcome(self, transition_id: int, welcome: bytes) -> None: ...
    def send_prepare_transition(self, transition_id: int, protocol_version: int) -> None: ...
    def send_execute_transition(self, transition_id: int) -> None: ...
    def send_prepare_epoch(self, epoch: int, protocol_version: int) -> None: ...


class _Kind(enum.Enum):
    JOINED = "joined"
    KEY_PACKAGE = "key_package"
    COMMIT_WELCOME = "commit_welcome"
    READY = "transition_ready"
    INVALID = "invalid_commit_welcome"
    LEFT = "left"
    TIMEOUT = "transition_timeout"
    DOWNGRADE = "downgrade"
    UPGRADE = "upgrade"


@dataclass(frozen=True)
class _Event:
    kind: _Kind
    participant: DaveParticipant | None = None
    data: bytes = b""
    transition_id: int = 0


@dataclass
class _Change:
    """Proposals in flight: who got them and who each recipient's commit would add/remove."""

    epoch: int
    recipients: set[int]
    adds: dict[int, list[int]]  # recipient -> user ids its commit adds, in proposal order
    packages: dict[int, bytes]  # the key packages proposed, to re-queue if nobody commits
    removes: list[int] = field(default_factory=list)  # user ids (their leaves) being removed


@dataclass
class _Transition:
    protocol_version: int
    participants: set[int]
    waiting: set[int]
    timer: asyncio.TimerHandle | None = None


class DaveCoordinator:
    """MLS external sender plus DAVE transitions for the call in one voice channel."""

    def __init__(self, channel_id: int, protocol_version: int, external_sender: ExternalSender):
        self.group_id = struct.pack(">Q", channel_id)
        self.protocol_version = protocol_version
        # Set to a user id to make that client's commits win whenever it is a recipient
        # (in-process fake users answer instantly and would otherwise always win).
        self.preferred_committer: int | None = None
        self.epoch = 0
        self.leaves: dict[int, int] = {}
        self._external_sender = external_sender
        self._participants: dict[int, DaveParticipant] = {}
        self._key_packages: dict[int, bytes] = {}
        self._has_external_sender: set[int] = set()
        self._change: _Change | None = None
        self._transitions: dict[int, _Transition] = {}
        self._transition_ids = itertools.count(1)
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(
            self._run(), name=f"dave-coordinator-{self.group_id.hex()}"
        )

    async def stop(self) -> None:
        for transition in self._transitions.values():
            if transition.timer is not None:
                transition.timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- what participants and tests report (never blocks) ---------------------------------

    def joined(self, participant: DaveParticipant) -> None:
        self._events.put_nowait(_Event(_Kind.JOINED, participant))

    def key_package(self, participant: DaveParticipant, key_package: bytes) -> None:
        self._events.put_nowait(_Event(_Kind.KEY_PACKAGE, participant, key_package))

    def commit_welcome(self, participant: DaveParticipant, payload: bytes) -> None:
        self._events.put_nowait(_Event(_Kind.COMMIT_WELCOME, participant, payload))

    def transition_ready(self, participant: DaveParticipant, transition_id: int) -> None:
        self._events.put_nowait(_Event(_Kind.READY, participant, transition_id=transition_id))

    def invalid_commit_welcome(self, participant: DaveParticipant, transition_id: int) -> None:
        self._events.put_nowait(_Event(_Kind.INVALID, participant, transition_id=transition_id))

    def left(self, participant: DaveParticipant) -> None:
        self._events.put_nowait(_Event(_Kind.LEFT, participant))

    def downgrade(self) -> None:
        """Move the call to protocol version 0 (op 21 → op 23s → op 22)."""
        self._events.put_nowait(_Event(_Kind.DOWNGRADE))

    def upgrade(self) -> None:
        """Move the call back to version 1: op 24 epoch 1, so everyone builds a new group."""
        self._events.put_nowait(_Event(_Kind.UPGRADE))

    # -- what tests wait for ---------------------------------------------------------------

    @property
    def members(self) -> set[int]:
        return set(self.leaves)

    @property
    def settled(self) -> bool:
        """No proposals in flight, no transition waiting, no key package left to add."""
        return (
            self._change is None
            and not self._transitions
            and self._events.empty()
            and (self.protocol_version == 0 or not self._key_packages)
        )

    async def wait_until(
        self, predicate: Callable[[DaveCoordinator], bool], timeout: float
    ) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def wait_for_members(self, user_ids: set[int], timeout: float = 10.0) -> None:
        """Until the group is exactly `user_ids` and its transition has executed."""
        await self.wait_until(lambda c: c.members == user_ids and c.settled, timeout)

    # -- the one task ----------------------------------------------------------------------

    async def _run(self) -> None:
        handlers = {
            _Kind.JOINED: self._on_joined,
            _Kind.KEY_PACKAGE: self._on_key_package,
            _Kind.COMMIT_WELCOME: self._on_commit_welcome,
            _Kind.READY: self._on_ready,
            _Kind.INVALID: self._on_invalid,
            _Kind.LEFT: self._on_left,
            _Kind.TIMEOUT: self._on_timeout,
            _Kind.DOWNGRADE: self._on_downgrade,
            _Kind.UPGRADE: self._on_upgrade,
        }
        while True:
            event = await self._events.get()
            try:
                handlers[event.kind](event)
                self._schedule()
            except Exception:
                # A malformed client message must not take the call down with it.
                _log.exception("DAVE coordinator failed on %s", event.kind.value)
            async with self._changed:
                self._changed.notify_all()

    def _on_joined(self, event: _Event) -> None:
        participant = _require(event.participant)
        self._participants[participant.user_id] = participant
        if self.protocol_version > 0:
            self._send_external_sender(participant)

    def _on_key_package(self, event: _Event) -> None:
        participant = _require(event.participant)
        if self._participants.get(participant.user_id) is not participant:
            return
        if self.protocol_version == 0:
            _log.warning("key package from %s while the call is not DAVE", participant.user_id)
            return
        self._key_packages[participant.user_id] = event.data

    def _on_commit_welcome(self, event: _Event) -> None:
        participant = _require(event.participant)
        change = self._change
        if change is None or participant.user_id not in change.recipients:
            _log.debug("ignoring commit from %s: nothing asked of it", participant.user_id)
            return
        commit, welcome = split_commit_welcome(event.data)
        epoch = _commit_epoch(commit)
        if epoch != change.epoch:
            _log.debug("ignoring commit for epoch %d (now %d)", epoch, change.epoch)
            return
        preferred = self.preferred_committer
        if preferred in change.recipients and participant.user_id != preferred:
            return
        self._change = None
        self._apply(participant.user_id, change, commit, welcome)

    def _apply(self, committer: int, change: _Change, commit: bytes, welcome: bytes | None) -> None:
        added = change.adds[committer]
        if change.epoch == 0:
            self.leaves = {committer: 0}
            announce_to = {committer}
        else:
            announce_to = set(self.leaves) - set(change.removes)
            for user_id in change.removes:
                del self.leaves[user_id]
        for user_id in added:
            used = set(self.leaves.values())
            self.leaves[user_id] = next(i for i in itertools.count() if i not in used)
        self.epoch = change.epoch + 1
        _log.info("MLS epoch %d by %d: +%s -%s", self.epoch, committer, added, change.removes)

        transition_id = next(self._transition_ids)
        everyone = {u for u in announce_to | set(added) if u in self._participants}
        self._start_transition(transition_id, self.protocol_version, everyone)
        for user_id in announce_to:
            if user_id in self._participants:
                self._participants[user_id].send_announce_commit(transition_id, commit)
        for user_id in added:
            if user_id in self._participants and welcome is not None:
                self._participants[user_id].send_welcome(transition_id, welcome)

    def _on_ready(self, event: _Event) -> None:
        transition = self._transitions.get(event.transition_id)
        if transition is not None:
            transition.waiting.discard(_require(event.participant).user_id)
            self._maybe_execute(event.transition_id)

    def _on_invalid(self, event: _Event) -> None:
        # The client will send a fresh key package; it gets removed and re-added then.
        participant = _require(event.participant)
        _log.warning(
            "client %s could not process transition %d", participant.user_id, event.transition_id
        )
        transition = self._transitions.get(event.transition_id)
        if transition is not None:
            transition.waiting.discard(participant.user_id)
            self._maybe_execute(event.transition_id)

    def _on_left(self, event: _Event) -> None:
        participant = _require(event.participant)
        if self._participants.get(participant.user_id) is not participant:
            return
        del self._participants[participant.user_id]
        self._key_packages.pop(participant.user_id, None)
        self._has_external_sender.discard(participant.user_id)
        for transition_id, transition in list(self._transitions.items()):
            transition.waiting.discard(participant.user_id)
            self._maybe_execute(transition_id)
        change = self._change
        if change is not None:
            change.recipients.discard(participant.user_id)
            if not change.recipients:
                # Nobody left to commit: whoever was to be added waits for the next change.
                self._change = None
                for user_id, package in change.packages.items():
                    if user_id in self._participants:
                        self._key_packages.setdefault(user_id, package)

    def _on_timeout(self, event: _Event) -> None:
        transition = self._transitions.get(event.transition_id)
        if transition is not None:
            _log.warning(
                "transition %d timed out waiting for %s", event.transition_id, transition.waiting
            )
            transition.waiting.clear()
            self._maybe_execute(event.transition_id)

    def _on_downgrade(self, _: _Event) -> None:
        transition_id = next(self._transition_ids)
        self.protocol_version = 0
        self._start_transition(transition_id, 0, set(self._participants))
        for participant in self._participants.values():
            participant.send_prepare_transition(transition_id, 0)

    def _on_upgrade(self, _: _Event) -> None:
        self.protocol_version = 1
        self.epoch = 0
        self.leaves = {}
        self._key_packages.clear()
        self._change = None
        for participant in self._participants.values():
            self._send_external_sender(participant)
            participant.send_prepare_epoch(1, 1)

    def _send_external_sender(self, participant: DaveParticipant) -> None:
        # Only once per connection: davey keeps it across reinit() and raises
        # AlreadyInGroup on a second one, which discord.py does not catch.
        if participant.user_id not in self._has_external_sender:
            self._has_external_sender.add(participant.user_id)
            participant.send_external_sender(self._external_sender.package())

    # -- transitions -----------------------------------------------------------------------

    def _start_transition(self, transition_id: int, version: int, participants: set[int]) -> None:
        timer = asyncio.get_running_loop().call_later(
            TRANSITION_TIMEOUT_S,
            self._events.put_nowait,
            _Event(_Kind.TIMEOUT, transition_id=transition_id),
        )
        self._transitions[transition_id] = _Transition(
            version, participants, set(participants), timer
        )

    def _maybe_execute(self, transition_id: int) -> None:
        transition = self._transitions[transition_id]
        if transition.waiting:
            return
        del self._transitions[transition_id]
        if transition.timer is not None:
            transition.timer.cancel()
        for user_id in transition.participants:
            if user_id in self._participants:
                self._participants[user_id].send_execute_transition(transition_id)

    # -- deciding the next change ----------------------------------------------------------

    def _schedule(self) -> None:
        if self._change is not None or self.protocol_version == 0:
            return
        # A member that sent a new key package (after op 31) starts over: remove, then re-add.
        holders = {
            u for u in self.leaves if u in self._participants and u not in self._key_packages
        }
        if self.leaves and not holders:
            self.epoch, self.leaves = 0, {}  # nobody connected holds the group any more
        if self.epoch == 0:
            self._propose_new_group()
            return
        removes = [u for u in self.leaves if u not in holders]
        if removes or self._key_packages:
            self._propose_change(holders, removes)

    def _propose_new_group(self) -> None:
        joiners = [u for u in self._key_packages if u in self._participants]
        if len(joiners) < 2:
            return  # a lone client cannot form a group (davey rejects adding itself)
        adds = {r: [u for u in joiners if u != r] for r in joiners}
        packages = {u: self._key_packages.pop(u) for u in joiners}
        self._change = _Change(epoch=0, recipients=set(joiners), adds=adds, packages=packages)
        for recipient, others in adds.items():
            proposals = b"".join(
                self._external_sender.add(self.group_id, 0, packages[u]) for u in others
            )
            self._participants[recipient].send_proposals(vec(proposals))

    def _propose_change(self, recipients: set[int], removes: list[int]) -> None:
        packages = dict(self._key_packages)
        self._key_packages.clear()
        joiners = list(packages)
        proposals = b"".join(
            self._external_sender.remove(self.group_id, self.epoch, self.leaves[u]) for u in removes
        ) + b"".join(
            self._external_sender.add(self.group_id, self.epoch, packages[u]) for u in joiners
        )
        self._change = _Change(
            epoch=self.epoch,
            recipients=recipients,
            adds={r: joiners for r in recipients},
            packages=packages,
            removes=removes,
        )
        for recipient in recipients:
            self._participants[recipient].send_proposals(vec(proposals))


def _require(participant: DaveParticipant | None) -> DaveParticipant:
    if participant is None:
        raise ValueError("event needs a participant")
    return participant


def _commit_epoch(commit: bytes) -> int:
    r = Reader(commit, 4)  # after version and wire format
    r.vec()  # group_id
    return r.u64()
