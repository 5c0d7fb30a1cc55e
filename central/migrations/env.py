"""Alembic environment for central's database (SQLite or PostgreSQL)."""

from __future__ import annotations

from alembic import context

from central.db import make_engine, metadata

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""


def run() -> None:
    """Run migrations online against ``url``."""
    engine = make_engine(url, pool_size=1)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
