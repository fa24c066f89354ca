"""The app's ratings as a rating source of the retrain flow: every current rating of one data set, read in one
consistent snapshot with the change counter's value (the watermark); the export is committed with the run.

The database is the archive of app ratings: each run reads all of them, so a changed rating replaces the one exported
before and a forgotten profile's ratings leave the data. The watermark says which are new: those changed after the
data set's last committed export. A run killed before it commits leaves no export, so the next counts them again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
from sqlalchemy import BigInteger, func, insert, literal, select

from pipeline.data.ratings_db.schema import APP_USER_ID_BASE, app_ratings, change_counter, exports
from pipeline.data.ratings_db.store import RatingsStore

APP_SOURCE = "app/ratings"  # the rating source's name in the run's lineage


@dataclass(frozen=True)
class AppRatingsExport:
    dataset: str
    ratings: pa.Table  # user_id, anime_id, rating (int64; the unrated value for watched), as a rating file reads
    watermark: int  # the change counter when read: every change up to it is in `ratings`
    since: int  # the data set's last committed export's watermark (0: none)
    new_ratings: int  # ratings changed after `since`

    def describe(self) -> str:
        return (f"{self.ratings.num_rows:,} of data set {self.dataset} from the web app's profiles "
                f"({self.new_ratings:,} new or changed since the last export)")


def read_app_ratings(store: RatingsStore, dataset: str, unrated_value: int) -> AppRatingsExport:
    """Every app rating of `dataset` and the watermark, from one snapshot."""
    with store.reader.connect() as connection:
        if store.write_lock is None:  # a server: one snapshot for the whole read (SQLite's BEGIN gives one)
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            watermark = connection.execute(select(change_counter.c.value).where(change_counter.c.id == 1)).scalar_one()
            since = connection.execute(select(func.coalesce(func.max(exports.c.watermark), 0)).where(
                exports.c.dataset == dataset)).scalar_one()
            rows = connection.execute(select(
                (literal(APP_USER_ID_BASE, BigInteger) + app_ratings.c.profile_id).label("user_id"),
                app_ratings.c.anime_id,
                func.coalesce(app_ratings.c.rating, unrated_value).label("rating"), app_ratings.c.change).where(
                app_ratings.c.dataset == dataset).order_by(app_ratings.c.profile_id, app_ratings.c.anime_id)).all()
    ratings = pa.table({name: pa.array([row[i] for row in rows], pa.int64())
                        for i, name in enumerate(("user_id", "anime_id", "rating"))})
    return AppRatingsExport(dataset, ratings, watermark, since, sum(row.change > since for row in rows))


def commit_export(store: RatingsStore, export: AppRatingsExport, run_id: str) -> None:
    """Record that `run_id` (its data committed) holds the data set's app ratings up to the export's watermark."""
    with store.writing() as connection:
        connection.execute(insert(exports).values(
            dataset=export.dataset, watermark=export.watermark, run_id=run_id, ratings=export.ratings.num_rows,
            new_ratings=export.new_ratings, exported_at=datetime.now(UTC)))


def exported_watermark(store: RatingsStore, run_id: str) -> int | None:
    """The watermark of the app ratings `run_id` trained on; None when that run committed no export."""
    with store.reader.connect() as connection:
        return connection.execute(select(func.max(exports.c.watermark)).where(exports.c.run_id == run_id)).scalar()
