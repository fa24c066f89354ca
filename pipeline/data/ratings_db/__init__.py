"""What people rate in the web app, kept in a real database (SQLAlchemy: SQLite in the data folder by default,
PostgreSQL by URL; schema versioned by Alembic), and read by the retrain flow as one more rating source."""
