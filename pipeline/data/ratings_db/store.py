"""The ratings store: profiles and what they rate, written in short transactions that commit before the caller
answers; the schema brought to the latest Alembic revision when the store is opened."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, delete, event, func, insert, select, update
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
    change: int
    updated_at: datetime


@dataclass(frozen=True)
class WriteLimits:
    per_minute: int  # writes one profile may make in a minute
    max_ratings: int  # anime one profile may hold per data set


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_store_engine(url: str) -> Engine:
    """An engine on `url`. SQLite: a file in WAL mode (readers never wait for the writer), each commit synced to disk,
    every transaction begun IMMEDIATE (it waits for the write lock at its start, never fails half-way on it)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # a plain postgresql:// URL: psycopg 3, the driver installed
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver opens no transaction of its own: _begin does
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest revision (a no-op when it is there)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def next_change(connection: Connection) -> int:
    """Take the change counter's next value: the row stays locked until this transaction ends, so writers commit
    in the order of their values."""
    connection.execute(update(change_counter).where(change_counter.c.id == 1).values(value=change_counter.c.value + 1))
    return connection.execute(select(change_counter.c.value).where(change_counter.c.id == 1)).scalar_one()


class RatingsStore:
    """Profiles and their ratings. A profile is found by its token, which only its owner's cookie holds."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> RatingsStore:
        engine = create_store_engine(url)
        migrate(engine)
        return cls(engine)

    @classmethod
    def existing(cls, url: str) -> RatingsStore | None:
        """The store at `url`, or None when it is a SQLite file that does not exist (the app never kept a rating)."""
        database = make_url(url).database
        if make_url(url).get_backend_name() == "sqlite" and database and not Path(database).exists():
            return None
        return cls.open(url)

    def close(self) -> None:
        self.engine.dispose()

    def create_profile(self) -> tuple[str, Profile]:
        """A new profile and its token (256 random bits), which is shown once and stored only as a digest."""
        token, created = secrets.token_urlsafe(32), datetime.now(UTC)
        with self.engine.begin() as connection:
            profile_id = connection.execute(insert(profiles).values(
                token_sha256=token_digest(token), created_at=created).returning(profiles.c.id)).scalar_one()
        return token, Profile(profile_id, created, 0)

    def profile(self, token: str | None) -> Profile | None:
        if not token or len(token) > 100:
            return None
        with self.engine.connect() as connection:
            row = connection.execute(select(profiles.c.id, profiles.c.created_at, profiles.c.last_change).where(
                profiles.c.token_sha256 == token_digest(token))).first()
        return None if row is None else Profile(row.id, _utc(row.created_at), row.last_change)

    def ratings(self, profile: Profile, dataset: str) -> list[StoredRating]:
        """The profile's anime in `dataset`, the last changed first."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(app_ratings.c.anime_id, app_ratings.c.rating, app_ratings.c.change,
                                             app_ratings.c.updated_at).where(
                app_ratings.c.profile_id == profile.id, app_ratings.c.dataset == dataset).order_by(
                app_ratings.c.change.desc())).all()
        return [StoredRating(row.anime_id, row.rating, row.change, _utc(row.updated_at)) for row in rows]

    def rate(self, profile: Profile, dataset: str, anime_id: int, rating: int | None, limits: WriteLimits) -> int:
        """Keep (or change) the profile's rating of one anime; committed when this returns its change number."""
        with self.engine.begin() as connection:
            change = self._count_write(connection, profile, limits)
            key = (app_ratings.c.profile_id == profile.id, app_ratings.c.dataset == dataset,
                   app_ratings.c.anime_id == anime_id)
            values = {"rating": rating, "change": change, "updated_at": datetime.now(UTC)}
            if connection.execute(update(app_ratings).where(*key).values(**values)).rowcount == 0:
                held = connection.execute(select(func.count()).select_from(app_ratings).where(*key[:2])).scalar_one()
                if held >= limits.max_ratings:
                    raise ProfileFullError(f"a profile holds at most {limits.max_ratings} anime")
                connection.execute(insert(app_ratings).values(profile_id=profile.id, dataset=dataset,
                                                              anime_id=anime_id, **values))
        return change

    def remove(self, profile: Profile, dataset: str, anime_id: int, limits: WriteLimits) -> bool:
        """Remove the profile's rating of one anime; False when it had none."""
        with self.engine.begin() as connection:
            self._count_write(connection, profile, limits)
            removed = connection.execute(delete(app_ratings).where(
                app_ratings.c.profile_id == profile.id, app_ratings.c.dataset == dataset,
                app_ratings.c.anime_id == anime_id)).rowcount
        return removed > 0

    def forget(self, profile: Profile) -> None:
        """Delete the profile and every rating it made."""
        with self.engine.begin() as connection:
            next_change(connection)
            connection.execute(delete(app_ratings).where(app_ratings.c.profile_id == profile.id))
            connection.execute(delete(profiles).where(profiles.c.id == profile.id))

    @staticmethod
    def _count_write(connection: Connection, profile: Profile, limits: WriteLimits) -> int:
        """Count one write against the profile's minute (refused past its limit) and take its change number."""
        change, now = next_change(connection), time.time()
        window = connection.execute(select(profiles.c.window_start, profiles.c.window_writes).where(
            profiles.c.id == profile.id)).first()
        if window is None:
            raise UnknownIdError("this profile was forgotten: reload the page to start a new one")
        fresh = window.window_start <= now - WINDOW_SECONDS
        if not fresh and window.window_writes >= limits.per_minute:
            raise WriteLimitError(limits.per_minute, max(1, int(window.window_start + WINDOW_SECONDS - now) + 1))
        connection.execute(update(profiles).where(profiles.c.id == profile.id).values(
            window_start=now if fresh else window.window_start,
            window_writes=1 if fresh else window.window_writes + 1, last_change=change))
        return change


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
