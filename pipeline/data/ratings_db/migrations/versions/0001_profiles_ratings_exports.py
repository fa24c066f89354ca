"""Profiles, their ratings, the change counter and the export log.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.Float, nullable=False, server_default="0"),
        sa.Column("window_writes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_change", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "app_ratings",
        sa.Column("profile_id", sa.Integer, sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("dataset", sa.String(200), primary_key=True),
        sa.Column("anime_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("rating", sa.Integer, nullable=True),
        sa.Column("change", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_app_ratings_dataset_change", "app_ratings", ["dataset", "change"])
    counter = op.create_table(
        "change_counter",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(counter, [{"id": 1, "value": 0}])
    op.create_table(
        "exports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("watermark", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("ratings", sa.Integer, nullable=False),
        sa.Column("new_ratings", sa.Integer, nullable=False),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_exports_dataset", "exports", ["dataset", "watermark"])
    op.create_index("ix_exports_run_id", "exports", ["run_id"])


def downgrade() -> None:
    for table in ("exports", "change_counter", "app_ratings", "profiles"):
        op.drop_table(table)
