"""The store's contract, run against both backends: a real SQLite file and a real Postgres
server (tests/support/postgres.py). Whatever one backend promises here, the other does too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import BridgeMapping
from bot.store import (
    CONFIG_CREATOR,
    DEFAULT_INVITE_CAP,
    MIGRATIONS,
    ChannelMapping,
    MappingStore,
    NoSuchRoom,
    ShareCodeRefused,
)
from bot.store import migrations as migrations_module
from tests.support.postgres import PostgresServer

GUILD = 1100000000000000001
OTHER_GUILD = 1100000000000000002
THIRD_GUILD = 1100000000000000003


class Clock:
    """The store's clock: real time, moved forward by the tests that need to."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, by: timedelta) -> None:
        self.offset += by


@dataclass
class Target:
    """One database on one backend, opened as often as a test likes."""

    backend: str
    clock: Clock
    opener: Callable[[Clock], Awaitable[MappingStore]]
    server: PostgresServer | None

    async def open(self) -> MappingStore:
        return await self.opener(self.clock)

    async def restart_server(self) -> None:
        """Postgres: stop and start the server (the data directory stays). SQLite: nothing."""
        if self.server is not None:
            await asyncio.to_thread(self.server.restart)


@pytest.fixture(params=["sqlite", "postgres"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "sqlite":
        path = tmp_path / "var" / "store.sqlite3"
        return Target("sqlite", Clock(), lambda clock: MappingStore.open(path, clock=clock), None)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = await server.create_database()
    return Target(
        "postgres", Clock(), lambda clock: MappingStore.open_postgres(url, clock=clock), server
    )


@pytest.fixture
async def store(target: Target) -> AsyncIterator[MappingStore]:
    opened = await target.open()
    yield opened
    await opened.close()


def bridge(channel_id: int, room: str, mode: str = "manual") -> BridgeMapping:
    return BridgeMapping(guild_id=GUILD, channel_id=channel_id, room=room, mode=mode)  # type: ignore[arg-type]


async def raw(store: MappingStore, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """A statement on the store's own connection, to look under the API (or to build an old
    schema's rows)."""
    async with store._db.transaction(write=True) as tx:
        return await tx.fetch(sql, *args)


# -- channel mappings ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_open_reports_where_and_which_backend(target: Target, store: MappingStore) -> None:
    assert store.backend == target.backend
    assert await store.list_all() == []
    if target.server is not None:
        assert store.where.startswith(f"postgresql://switchboard@127.0.0.1:{target.server.port}/")
    else:
        assert store.where.endswith("store.sqlite3")


@pytest.mark.timeout(30)
async def test_link_get_list_unlink(store: MappingStore) -> None:
    before = time.time()
    linked = await store.link(GUILD, 10, "lobby", "auto", "4242")
    assert isinstance(linked, ChannelMapping)
    assert (linked.guild_id, linked.channel_id, linked.room, linked.mode, linked.created_by) == (
        GUILD,
        10,
        "lobby",
        "auto",
        "4242",
    )
    assert before - 1 <= linked.created_at.timestamp() <= time.time() + 1
    assert linked.created_at.tzinfo is not None
    assert not linked.from_config
    await store.link(GUILD, 11, "games", "manual", "4242")
    await store.link(OTHER_GUILD, 12, "lobby", "manual", "77")

    assert await store.get(GUILD, 10) == linked
    assert await store.get(GUILD, 99) is None
    assert [m.channel_id for m in await store.list(GUILD)] == [10, 11]
    assert [m.channel_id for m in await store.list(OTHER_GUILD)] == [12]
    assert [(m.guild_id, m.channel_id) for m in await store.by_room("lobby")] == [
        (GUILD, 10),
        (OTHER_GUILD, 12),
    ]
    assert len(await store.list_all()) == 3

    assert await store.unlink(GUILD, 10) is True
    assert await store.unlink(GUILD, 10) is False
    assert await store.get(GUILD, 10) is None
    assert [m.channel_id for m in await store.list(GUILD)] == [11]


@pytest.mark.timeout(30)
async def test_link_replaces_a_channels_mapping(store: MappingStore) -> None:
    await store.link(GUILD, 10, "lobby", "auto", "1")
    again = await store.link(GUILD, 10, "stage", "manual", "2")
    assert (again.room, again.mode, again.created_by) == ("stage", "manual", "2")
    assert await store.list(GUILD) == [again]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "args",
    [
        (GUILD, 10, "Bad Room!", "manual", "1"),
        (GUILD, 10, "x" * 65, "manual", "1"),
        (GUILD, 10, "", "manual", "1"),
        (GUILD, 10, "lobby", "sometimes", "1"),
        (GUILD, 10, "lobby", "manual", ""),
        (0, 10, "lobby", "manual", "1"),
        (2**63, 10, "lobby", "manual", "1"),
        (GUILD, True, "lobby", "manual", "1"),
        (GUILD, "10", "lobby", "manual", "1"),
    ],
)
async def test_link_refuses_invalid_values(store: MappingStore, args: tuple) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        await store.link(*args)
    assert await store.list_all() == []
    assert await store.get_room("lobby") is None


@pytest.mark.timeout(30)
async def test_the_schema_refuses_what_the_api_would(store: MappingStore) -> None:
    # The rules hold in the database itself, for anything that writes around the API.
    for room in ("Bad Room", "x" * 65, ""):
        with pytest.raises(Exception, match=r"(?i)check"):
            await raw(
                store,
                "INSERT INTO channel_mappings VALUES ($1, 1, $2, 'manual', '1', $3)",
                GUILD,
                room,
                datetime.now(UTC),
            )
    assert await store.list_all() == []


@pytest.mark.timeout(60)
async def test_mappings_survive_a_restart(target: Target) -> None:
    store = await target.open()
    first = await store.link(GUILD, 10, "lobby", "auto", "1")
    await store.link(GUILD, 11, "games", "manual", "2")
    await store.unlink(GUILD, 11)
    await store.close()
    await target.restart_server()

    reopened = await target.open()
    try:
        assert await reopened.list_all() == [first]
        room = await reopened.get_room("lobby")
        assert room is not None and room.owner_guild_id == GUILD
    finally:
        await reopened.close()


@pytest.mark.timeout(30)
async def test_a_closed_store_refuses_calls_and_closes_once(target: Target) -> None:
    store = await target.open()
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.list_all()


# -- concurrency --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_fifty_concurrent_writers_lose_nothing(store: MappingStore) -> None:
    await asyncio.gather(
        *(
            store.link(GUILD, channel, f"room-{channel}", "manual", str(channel))
            for channel in range(1, 51)
        )
    )
    mappings = await store.list(GUILD)
    assert [(m.channel_id, m.room) for m in mappings] == [(c, f"room-{c}") for c in range(1, 51)]

    await asyncio.gather(
        *(store.unlink(GUILD, c) for c in range(1, 26)),
        *(store.link(GUILD, c, "moved", "auto", "9") for c in range(26, 51)),
    )
    assert [(m.channel_id, m.room) for m in await store.list(GUILD)] == [
        (c, "moved") for c in range(26, 51)
    ]
    assert len(await store.rooms_for_guild(GUILD)) == 51


@pytest.mark.timeout(60)
async def test_two_stores_on_one_database_write_concurrently(target: Target) -> None:
    # Two service processes on one database, say: both open (and migrate) at once, then write.
    first, second = await asyncio.gather(target.open(), target.open())
    try:
        await asyncio.gather(
            *(first.link(GUILD, c, "first", "manual", "1") for c in range(1, 51)),
            *(second.link(OTHER_GUILD, c, "second", "auto", "2") for c in range(1, 51)),
            *(first.link(GUILD, c, "both", "manual", "1") for c in range(100, 110)),
            *(second.link(GUILD, c, "both", "manual", "2") for c in range(110, 120)),
        )
        for store in (first, second):
            assert len(await store.list(GUILD)) == 70
            assert len(await store.list(OTHER_GUILD)) == 50
            assert len(await store.by_room("both")) == 20
            both = await store.get_room("both")
            assert both is not None and both.owner_guild_id == GUILD
    finally:
        await first.close()
        await second.close()


@pytest.mark.timeout(60)
async def test_cancelled_calls_leave_the_store_working(store: MappingStore) -> None:
    # Callers give up (a slash command times out, the service stops) at every possible point
    # of a write: each write lands whole or not at all, and the store goes on working.
    for delay_ms in range(12):
        calls = [
            asyncio.create_task(store.link(GUILD, c, "lobby", "manual", "1"))
            for c in range(delay_ms * 10 + 1, delay_ms * 10 + 11)
        ]
        await asyncio.sleep(delay_ms / 1000)
        for call in calls[::2]:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
    for mapping in await store.list(GUILD):
        assert (mapping.room, mapping.mode, mapping.created_by) == ("lobby", "manual", "1")
    survivor = await store.link(GUILD, 999, "after", "auto", "2")
    assert await store.get(GUILD, 999) == survivor
    assert len(await store.list(GUILD)) >= 61  # at least every call nobody cancelled


# -- static mappings from config.toml -----------------------------------------------------------


@pytest.mark.timeout(30)
async def test_static_mappings_are_loaded_as_config_rows(store: MappingStore) -> None:
    result = await store.load_static([bridge(1, "lobby"), bridge(2, "games", "auto")])
    assert [(m.channel_id, m.room, m.mode) for m in result.applied] == [
        (1, "lobby", "manual"),
        (2, "games", "auto"),
    ]
    assert result.removed == () and result.shadowed == ()
    assert all(m.created_by == CONFIG_CREATOR and m.from_config for m in await store.list(GUILD))
    assert [r.name for r in await store.rooms_for_guild(GUILD)] == ["games", "lobby"]


@pytest.mark.timeout(60)
async def test_static_reload_follows_the_config_file(target: Target) -> None:
    store = await target.open()
    await store.load_static([bridge(1, "lobby"), bridge(2, "games"), bridge(3, "old")])
    unchanged = await store.get(GUILD, 1)
    await store.close()

    # Next start: entry 2 changed, entry 3 removed from the file, entry 4 added.
    store = await target.open()
    try:
        result = await store.load_static(
            [bridge(1, "lobby"), bridge(2, "games", "auto"), bridge(4, "new")]
        )
        assert [m.channel_id for m in result.removed] == [3]
        assert [(m.channel_id, m.room, m.mode) for m in await store.list(GUILD)] == [
            (1, "lobby", "manual"),
            (2, "games", "auto"),
            (4, "new", "manual"),
        ]
        assert await store.get(GUILD, 1) == unchanged  # created_at kept when nothing changed
        result = await store.load_static([])
        assert len(result.removed) == 3
        assert await store.list_all() == []
    finally:
        await store.close()


@pytest.mark.timeout(30)
async def test_static_load_never_touches_user_mappings(store: MappingStore) -> None:
    mine = await store.link(GUILD, 1, "mine", "auto", "4242")
    other = await store.link(GUILD, 5, "elsewhere", "manual", "4242")
    result = await store.load_static([bridge(1, "lobby"), bridge(2, "games")])
    assert result.shadowed == (mine,)
    assert [m.channel_id for m in result.applied] == [2]
    assert await store.get(GUILD, 1) == mine
    await store.load_static([])
    assert await store.list(GUILD) == [mine, other]


@pytest.mark.timeout(30)
async def test_users_can_take_over_or_unlink_config_mappings(store: MappingStore) -> None:
    await store.load_static([bridge(1, "lobby"), bridge(2, "games")])
    taken = await store.link(GUILD, 1, "mine", "auto", "4242")
    assert await store.unlink(GUILD, 2)
    result = await store.load_static([bridge(1, "lobby"), bridge(2, "games")])
    assert result.shadowed == (taken,)
    assert [(m.channel_id, m.room, m.created_by) for m in await store.list(GUILD)] == [
        (1, "mine", "4242"),
        (2, "games", CONFIG_CREATOR),
    ]


@pytest.mark.timeout(30)
async def test_static_load_refuses_a_channel_twice(store: MappingStore) -> None:
    with pytest.raises(ValueError, match="twice"):
        await store.load_static([bridge(1, "a"), bridge(1, "b")])
    assert await store.list_all() == []


# -- rooms and their owners ---------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_the_first_guild_to_link_a_room_owns_it(store: MappingStore) -> None:
    await store.link(GUILD, 10, "lobby", "manual", "4242")
    await store.link(OTHER_GUILD, 20, "lobby", "manual", "77")
    room = await store.get_room("lobby")
    assert room is not None
    assert (room.name, room.owner_guild_id, room.created_by) == ("lobby", GUILD, "4242")
    # The room outlives its channels: its owner keeps it (web-only rooms are allowed).
    assert await store.unlink(GUILD, 10)
    await store.link(THIRD_GUILD, 30, "lobby", "manual", "99")
    assert await store.get_room("lobby") == room


@pytest.mark.timeout(30)
async def test_create_room_makes_a_web_only_room_or_returns_the_existing_one(
    store: MappingStore,
) -> None:
    created = await store.create_room("stage", GUILD, "4242")
    assert (created.name, created.owner_guild_id) == ("stage", GUILD)
    assert await store.by_room("stage") == []
    again = await store.create_room("stage", OTHER_GUILD, "77")
    assert again == created  # taken: the owner stays, the caller sees whose it is
    with pytest.raises(ValueError):
        await store.create_room("Not A Room", GUILD, "1")
    assert await store.get_room("nowhere") is None


@pytest.mark.timeout(30)
async def test_rooms_for_guild_and_may_use_room(store: MappingStore) -> None:
    await store.create_room("b-owned", GUILD, "1")
    await store.create_room("a-foreign", OTHER_GUILD, "2")
    await store.create_room("c-shared", OTHER_GUILD, "2")
    code = await store.create_share_code("c-shared", "2")
    await store.redeem_share_code(code.code, GUILD, "1")

    assert [r.name for r in await store.rooms_for_guild(GUILD)] == ["b-owned", "c-shared"]
    assert [r.name for r in await store.rooms_for_guild(OTHER_GUILD)] == ["a-foreign", "c-shared"]
    assert await store.may_use_room("b-owned", GUILD)
    assert await store.may_use_room("c-shared", GUILD)
    assert not await store.may_use_room("a-foreign", GUILD)
    assert not await store.may_use_room("missing", GUILD)
    assert not await store.may_use_room("b-owned", THIRD_GUILD)


# -- room shares --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_a_share_code_lets_one_guild_in_once(store: MappingStore) -> None:
    await store.link(GUILD, 10, "lobby", "manual", "4242")
    code = await store.create_share_code("lobby", "4242")
    assert code.room == "lobby" and len(code.code) >= 16
    share = await store.redeem_share_code(code.code, OTHER_GUILD, "77")
    assert (share.room, share.guild_id, share.granted_by) == ("lobby", OTHER_GUILD, "77")
    assert await store.shares("lobby") == [share]
    with pytest.raises(ShareCodeRefused) as refused:
        await store.redeem_share_code(code.code, THIRD_GUILD, "99")
    assert refused.value.reason == "used"
    assert code.code not in str(refused.value)
    assert not await store.may_use_room("lobby", THIRD_GUILD)


@pytest.mark.timeout(30)
async def test_share_codes_are_stored_hashed(store: MappingStore) -> None:
    await store.create_room("lobby", GUILD, "1")
    code = await store.create_share_code("lobby", "1")
    rows = await raw(store, "SELECT * FROM share_codes")
    assert len(rows) == 1
    assert all(code.code not in str(value) for value in rows[0])


@pytest.mark.timeout(30)
async def test_share_codes_refused_when_unknown_expired_or_for_the_owner(
    target: Target, store: MappingStore
) -> None:
    await store.create_room("lobby", GUILD, "1")
    with pytest.raises(ShareCodeRefused) as unknown:
        await store.redeem_share_code("not-a-code", OTHER_GUILD, "77")
    assert unknown.value.reason == "unknown"

    own = await store.create_share_code("lobby", "1")
    with pytest.raises(ShareCodeRefused) as owner:
        await store.redeem_share_code(own.code, GUILD, "1")
    assert owner.value.reason == "owner"

    short = await store.create_share_code("lobby", "1", timedelta(minutes=10))
    assert short.expires_at - target.clock() <= timedelta(minutes=10)
    target.clock.advance(timedelta(minutes=11))
    with pytest.raises(ShareCodeRefused) as expired:
        await store.redeem_share_code(short.code, OTHER_GUILD, "77")
    assert expired.value.reason == "expired"
    # A refused code is not used up: the owner's own code still works for another guild.
    assert (await store.redeem_share_code(own.code, OTHER_GUILD, "77")).guild_id == OTHER_GUILD

    with pytest.raises(NoSuchRoom):
        await store.create_share_code("missing", "1")
    with pytest.raises(ValueError):
        await store.create_share_code("lobby", "1", timedelta(0))


@pytest.mark.timeout(60)
async def test_one_code_redeemed_concurrently_lets_exactly_one_guild_in(
    target: Target,
) -> None:
    first, second = await target.open(), await target.open()
    try:
        await first.create_room("lobby", GUILD, "1")
        code = await first.create_share_code("lobby", "1")
        guilds = range(OTHER_GUILD, OTHER_GUILD + 10)
        outcomes = await asyncio.gather(
            *(
                (first if i % 2 else second).redeem_share_code(code.code, guild, str(guild))
                for i, guild in enumerate(guilds)
            ),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        refusals = [o for o in outcomes if isinstance(o, ShareCodeRefused)]
        assert len(winners) == 1 and len(refusals) == 9
        assert {r.reason for r in refusals} == {"used"}
        assert await first.shares("lobby") == winners
    finally:
        await first.close()
        await second.close()


@pytest.mark.timeout(30)
async def test_removing_a_share_unlinks_that_guilds_channels_from_the_room(
    store: MappingStore,
) -> None:
    await store.link(GUILD, 10, "lobby", "manual", "1")
    code = await store.create_share_code("lobby", "1")
    await store.redeem_share_code(code.code, OTHER_GUILD, "77")
    await store.link(OTHER_GUILD, 20, "lobby", "manual", "77")
    await store.link(OTHER_GUILD, 21, "lobby", "auto", "77")
    kept = await store.link(OTHER_GUILD, 22, "elsewhere", "manual", "77")

    removal = await store.remove_share("lobby", OTHER_GUILD)
    assert removal is not None
    assert removal.share.guild_id == OTHER_GUILD
    assert [m.channel_id for m in removal.unlinked] == [20, 21]
    assert await store.shares("lobby") == []
    assert await store.list(OTHER_GUILD) == [kept]
    assert [m.guild_id for m in await store.by_room("lobby")] == [GUILD]
    assert not await store.may_use_room("lobby", OTHER_GUILD)
    assert await store.remove_share("lobby", OTHER_GUILD) is None


# -- web invites --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_invites_are_recorded_listed_and_revoked(target: Target, store: MappingStore) -> None:
    await store.create_room("lobby", GUILD, "1")
    expires = target.clock() + timedelta(hours=1)
    speaker = await store.create_invite("lobby", GUILD, "4242", "speaker", expires)
    listener = await store.create_invite("lobby", GUILD, "4242", "listener", expires, 20)
    assert speaker.id != listener.id and len(speaker.id) >= 16
    assert (speaker.room, speaker.guild_id, speaker.created_by, speaker.role) == (
        "lobby",
        GUILD,
        "4242",
        "speaker",
    )
    assert speaker.max_participants == DEFAULT_INVITE_CAP and listener.max_participants == 20
    assert speaker.expires_at == expires
    assert speaker.usable_at(target.clock()) and not speaker.revoked
    assert await store.get_invite(speaker.id) == speaker
    assert await store.invites("lobby") == [speaker, listener]

    revoked = await store.revoke_invite(speaker.id, "99")
    assert revoked is not None and revoked.revoked and revoked.revoked_by == "99"
    assert not revoked.usable_at(target.clock())
    target.clock.advance(timedelta(seconds=5))
    again = await store.revoke_invite(speaker.id, "100")
    assert again == revoked  # the first revocation stands
    assert await store.invites("lobby") == [listener]
    assert await store.invites("lobby", usable_only=False) == [revoked, listener]
    assert await store.revoke_invite("no-such-invite", "99") is None
    assert await store.get_invite("no-such-invite") is None


@pytest.mark.timeout(30)
async def test_invites_expire(target: Target, store: MappingStore) -> None:
    await store.create_room("lobby", GUILD, "1")
    soon = await store.create_invite(
        "lobby", GUILD, "1", "listener", target.clock() + timedelta(minutes=5)
    )
    later = await store.create_invite(
        "lobby", GUILD, "1", "listener", target.clock() + timedelta(hours=5)
    )
    target.clock.advance(timedelta(minutes=6))
    assert not soon.usable_at(target.clock())
    assert await store.invites("lobby") == [later]
    assert await store.delete_expired() == 1
    assert await store.get_invite(soon.id) is None
    assert await store.get_invite(later.id) == later


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("room", "role", "in_hours", "cap", "error"),
    [
        ("missing", "speaker", 1, 5, NoSuchRoom),
        ("lobby", "admin", 1, 5, ValueError),
        ("lobby", "speaker", -1, 5, ValueError),
        ("lobby", "speaker", 1, 0, ValueError),
        ("lobby", "speaker", 1, 51, ValueError),
        ("Bad Room", "speaker", 1, 5, ValueError),
    ],
)
async def test_invalid_invites_are_refused(
    target: Target,
    store: MappingStore,
    room: str,
    role: str,
    in_hours: int,
    cap: int,
    error: type[Exception],
) -> None:
    await store.create_room("lobby", GUILD, "1")
    expires = target.clock() + timedelta(hours=in_hours)
    with pytest.raises(error):
        await store.create_invite(room, GUILD, "1", role, expires, cap)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # an expiry without a time zone is ambiguous
        await store.create_invite("lobby", GUILD, "1", "speaker", datetime.now() + timedelta(1))
    assert await store.invites("lobby", usable_only=False) == []


@pytest.mark.timeout(60)
async def test_invite_revocations_survive_a_restart(target: Target) -> None:
    store = await target.open()
    await store.create_room("lobby", GUILD, "1")
    expires = target.clock() + timedelta(hours=8)
    revoked = await store.create_invite("lobby", GUILD, "1", "speaker", expires)
    kept = await store.create_invite("lobby", GUILD, "1", "listener", expires, 3)
    revoked = await store.revoke_invite(revoked.id, "4242")  # type: ignore[assignment]
    await store.close()
    await target.restart_server()

    reopened = await target.open()
    try:
        assert await reopened.get_invite(revoked.id) == revoked
        assert revoked.revoked_at is not None
        assert await reopened.invites("lobby") == [kept]
    finally:
        await reopened.close()


# -- migrations ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_existing_mappings_migrate_to_rooms_owned_by_the_earliest_linking_guild(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database made by the release that had only migration 1, with mappings in it.
    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS[:1])
    old = await target.open()
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for guild, channel, room, minutes in [
        (OTHER_GUILD, 20, "lobby", 5),
        (GUILD, 10, "lobby", 1),  # linked lobby first
        (THIRD_GUILD, 30, "lobby", 9),
        (OTHER_GUILD, 21, "games", 0),
        (GUILD, 11, "games", 3),
    ]:
        await raw(
            old,
            "INSERT INTO channel_mappings VALUES ($1, $2, $3, 'manual', $4, $5)",
            guild,
            channel,
            room,
            str(guild)[-2:],
            start + timedelta(minutes=minutes),
        )
    await old.close()

    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS)
    store = await target.open()
    try:
        lobby, games = await store.get_room("lobby"), await store.get_room("games")
        assert lobby is not None and games is not None
        assert (lobby.owner_guild_id, lobby.created_by) == (GUILD, "01")
        assert lobby.created_at == start + timedelta(minutes=1)
        assert games.owner_guild_id == OTHER_GUILD
        assert len(await store.list_all()) == 5
        assert await store.shares("lobby") == []
    finally:
        await store.close()
