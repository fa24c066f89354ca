"""The ratings store: profiles and what they rate, written in short transactions that commit before the caller
answers; the schema brought to the latest Alembic revision when the store is opened."""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, bindparam, case, create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import Connection, make_url

from pipeline.data.ratings_db.schema import APP_USER_ID_BASE, app_ratings, change_counter, profiles
from pipeline.errors import UnknownIdError

MIGRATIONS = Path(__file__).parent / "migrations"
WINDOW_SECONDS = 60


class WriteLimitError(Exception):
    """A profile wrote more than its limit this minute; `retry_after` seconds until the window turns."""

    def __init__(self, limit: int, retry_after: int):
        super().__init__(f"a profile takes at most {limit} changes a minute: try again in {retry_after} s")
        self.retry_after = retry_after


class ProfileFullError(Exception):
    """A profile already holds as many anime as it may."""


@dataclass(frozen=True)
class Profile:
    id: int
    created_at: datetime
    last_change: int  # the change counter's value at its last write (0: none)

    @property
    def user_id(self) -> int:
        """Its user id in the rating data: never one of a data set's own."""
        return APP_USER_ID_BASE + self.id


@dataclass(frozen=True)
class StoredRating:
    anime_id: int
    rating: int | None  # None: watched, not rated
    updated_at: datetime


@dataclass(frozen=True)
class WriteLimits:
    per_minute: int  # writes one profile may make in a minute
    max_ratings: int  # anime one profile may hold per data set


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _sqlite_engine(url, begin: str) -> Engine:
    """A SQLite engine whose transactions start with `begin` (the driver opens none of its own)."""
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql(begin)

    return engine


def create_store_engines(url: str) -> tuple[Engine, Engine, Path | None]:
    """The writer and reader engines on `url`, and the file that orders SQLite's writers (None for a server).

    SQLite: a file in WAL mode (readers never wait for the writer), each commit synced to disk. Writes begin IMMEDIATE
    (they take the write lock first, so none fails half-way on it), after taking an exclusive lock on a file beside the
    database: SQLite's own wait polls with growing sleeps, which leaves a write waiting long after the lock is free
    when several processes write; the file lock hands it over at once, in turn."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # a plain postgresql:// URL: psycopg 3, the driver installed
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(parsed, pool_pre_ping=True, pool_size=10)
        return engine, engine, None
    if not parsed.database:
        raise ValueError(f"{url}: the ratings database must be a file (sqlite:///path/ratings.db)")
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return (_sqlite_engine(parsed, "BEGIN IMMEDIATE"), _sqlite_engine(parsed, "BEGIN"),
            Path(parsed.database + ".write-lock"))


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest revision (a no-op when it is there)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


# The statements of every request, built once: SQLAlchemy then reuses their cache keys and compiled SQL, which keeps
# a write's time inside the write lock to the database's own work. (Parameters are named p_*: SQLAlchemy keeps the
# columns' names for itself.)
_NEXT_CHANGE = update(change_counter).where(change_counter.c.id == 1).values(
    value=change_counter.c.value + 1).returning(change_counter.c.value)
_FRESH_WINDOW = profiles.c.window_start <= bindparam("p_window_from")
_COUNT_WRITE = update(profiles).where(profiles.c.id == bindparam("p_profile")).values(
    window_start=case((_FRESH_WINDOW, bindparam("p_now")), else_=profiles.c.window_start),
    window_writes=case((_FRESH_WINDOW, 1), else_=profiles.c.window_writes + 1),
    last_change=bindparam("p_change")).returning(profiles.c.window_start, profiles.c.window_writes)
_PROFILE_BY_TOKEN = select(profiles.c.id, profiles.c.created_at, profiles.c.last_change).where(
    profiles.c.token_sha256 == bindparam("p_digest"))
_IS_RATING = ((app_ratings.c.profile_id == bindparam("p_profile")) & (app_ratings.c.dataset == bindparam("p_dataset"))
              & (app_ratings.c.anime_id == bindparam("p_anime")))
_OF_PROFILE = (app_ratings.c.profile_id == bindparam("p_profile")) & (app_ratings.c.dataset == bindparam("p_dataset"))
_CHANGE_RATING = update(app_ratings).where(_IS_RATING).values(
    rating=bindparam("p_rating"), change=bindparam("p_change"), updated_at=bindparam("p_updated"))
_HELD = select(func.count()).select_from(app_ratings).where(_OF_PROFILE)
_ADD_RATING = insert(app_ratings).values(
    profile_id=bindparam("p_profile"), dataset=bindparam("p_dataset"), anime_id=bindparam("p_anime"),
    rating=bindparam("p_rating"), change=bindparam("p_change"), updated_at=bindparam("p_updated"))
_REMOVE_RATING = delete(app_ratings).where(_IS_RATING)
_RATINGS_OF = select(app_ratings.c.anime_id, app_ratings.c.rating, app_ratings.c.updated_at).where(
    _OF_PROFILE).order_by(app_ratings.c.change.desc())


def next_change(connection: Connection) -> int:
    """Take the change counter's next value: the row stays locked until this transaction ends, so writers commit
    in the order of their values."""
    return connection.execute(_NEXT_CHANGE).scalar_one()


class RatingsStore:
    """Profiles and their ratings. A profile is found by its token, which only its owner's cookie holds."""

    def __init__(self, writer: Engine, reader: Engine, write_lock: Path | None):
        self.engine, self.reader, self.write_lock = writer, reader, write_lock

    @classmethod
    def open(cls, url: str) -> RatingsStore:
        store = cls(*create_store_engines(url))
        migrate(store.engine)
        return store

    @classmethod
    def existing(cls, url: str) -> RatingsStore | None:
        """The store at `url`, or None when it is a SQLite file that does not exist (the app never kept a rating)."""
        database = make_url(url).database
        if make_url(url).get_backend_name() == "sqlite" and database and not Path(database).exists():
            return None
        return cls.open(url)

    def close(self) -> None:
        self.engine.dispose()
        self.reader.dispose()

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction, committed when the block ends (its writers in turn, on SQLite)."""
        if self.write_lock is None:
            with self.engine.begin() as connection:
                yield connection
            return
        descriptor = os.open(self.write_lock, os.O_RDWR | os.O_CREAT, 0o600)  # one per write: threads wait too
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            with self.engine.begin() as connection:
                yield connection
        finally:
            os.close(descriptor)

    def create_profile(self) -> tuple[str, Profile]:
        """A new profile and its token (256 random bits), which is shown once and stored only as a digest."""
        token, created = secrets.token_urlsafe(32), datetime.now(UTC)
        with self.writing() as connection:
            profile_id = connection.execute(insert(profiles).values(
                token_sha256=token_digest(token), created_at=created).returning(profiles.c.id)).scalar_one()
        return token, Profile(profile_id, created, 0)

    def profile(self, token: str | None) -> Profile | None:
        if not token or len(token) > 100:
            return None
        with self.reader.connect() as connection:
            row = connection.execute(_PROFILE_BY_TOKEN, {"p_digest": token_digest(token)}).first()
        return None if row is None else Profile(row.id, _utc(row.created_at), row.last_change)

    def ratings(self, profile: Profile, dataset: str) -> list[StoredRating]:
        """The profile's anime in `dataset`, the last changed first."""
        with self.reader.connect() as connection:
            rows = connection.execute(_RATINGS_OF, {"p_profile": profile.id, "p_dataset": dataset}).all()
        return [StoredRating(row.anime_id, row.rating, _utc(row.updated_at)) for row in rows]

    def rate(self, profile: Profile, dataset: str, anime_id: int, rating: int | None, limits: WriteLimits) -> int:
        """Keep (or change) the profile's rating of one anime; committed when this returns its change number."""
        values = {"p_profile": profile.id, "p_dataset": dataset, "p_anime": anime_id, "p_rating": rating,
                  "p_updated": datetime.now(UTC)}
        with self.writing() as connection:
            values["p_change"] = self._count_write(connection, profile, limits)
            if connection.execute(_CHANGE_RATING, values).rowcount == 0:
                if connection.execute(_HELD, values).scalar_one() >= limits.max_ratings:
                    raise ProfileFullError(f"a profile holds at most {limits.max_ratings} anime")
                connection.execute(_ADD_RATING, values)
        return values["p_change"]

    def remove(self, profile: Profile, dataset: str, anime_id: int, limits: WriteLimits) -> bool:
        """Remove the profile's rating of one anime; False when it had none."""
        with self.writing() as connection:
            self._count_write(connection, profile, limits)
            removed = connection.execute(_REMOVE_RATING, {"p_profile": profile.id, "p_dataset": dataset,
                                                          "p_anime": anime_id}).rowcount
        return removed > 0

    def forget(self, profile: Profile) -> None:
        """Delete the profile and every rating it made."""
        with self.writing() as connection:
            next_change(connection)
            connection.execute(delete(app_ratings).where(app_ratings.c.profile_id == profile.id))
            connection.execute(delete(profiles).where(profiles.c.id == profile.id))

    @staticmethod
    def _count_write(connection: Connection, profile: Profile, limits: WriteLimits) -> int:
        """Take the write's change number and count it against the profile's minute (refused past its limit: the
        transaction then ends without a change)."""
        change, now = next_change(connection), time.time()
        window = connection.execute(_COUNT_WRITE, {"p_profile": profile.id, "p_now": now, "p_change": change,
                                                   "p_window_from": now - WINDOW_SECONDS}).first()
        if window is None:
            raise UnknownIdError("this profile was forgotten: reload the page to start a new one")
        if window.window_writes > limits.per_minute:
            raise WriteLimitError(limits.per_minute, max(1, int(window.window_start + WINDOW_SECONDS - now) + 1))
        return change


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
