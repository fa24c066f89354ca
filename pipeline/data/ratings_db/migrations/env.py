"""Alembic's environment: migrations run on the connection the store hands over (store.migrate), never from a
config file."""

from alembic import context

context.configure(connection=context.config.attributes["connection"], render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
