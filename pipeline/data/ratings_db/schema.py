"""The ratings database's tables (SQLAlchemy Core), as the latest migration leaves them (migrations/versions/)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table

# App profiles become users of the rating data from this id up: a data set's own ids must stay below it (ingest
# checks), so the two never collide. 10**15 stays below 2**53: exact in JSON and in JavaScript.
APP_USER_ID_BASE = 10**15

metadata = MetaData()

profiles = Table(
    "profiles", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_sha256", String(64), nullable=False, unique=True),  # the cookie's token is never stored
    Column("created_at", DateTime(timezone=True), nullable=False),
    # writes in the current minute (a fixed window), counted in the write's own transaction
    Column("window_start", Float, nullable=False, server_default="0"),
    Column("window_writes", Integer, nullable=False, server_default="0"),
    Column("last_change", BigInteger, nullable=False, server_default="0"),  # of its ratings, removals included
)

app_ratings = Table(
    "app_ratings", metadata,
    Column("profile_id", Integer, ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True),
    Column("dataset", String(200), primary_key=True),
    Column("anime_id", BigInteger, primary_key=True, autoincrement=False),
    Column("rating", Integer, nullable=True),  # null: watched, not rated
    Column("change", BigInteger, nullable=False),  # the change counter's value when last written
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_app_ratings_dataset_change", "dataset", "change"),
)

# One row: every write takes the next value inside its transaction, so values are in commit order and an export's
# watermark (the value it read) covers exactly the writes committed before it.
change_counter = Table(
    "change_counter", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False),
)

exports = Table(
    "exports", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(200), nullable=False),
    Column("watermark", BigInteger, nullable=False),  # changes up to this value are in the run's data
    Column("run_id", String(64), nullable=False),  # the MLflow run that trained on them ("" when it did not train)
    Column("ratings", Integer, nullable=False),
    Column("new_ratings", Integer, nullable=False),
    Column("exported_at", DateTime(timezone=True), nullable=False),
    Index("ix_exports_dataset", "dataset", "watermark"),
    Index("ix_exports_run_id", "run_id"),
)
