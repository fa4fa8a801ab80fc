"""Alembic environment: migrations run against the URL that postback was given.

The whole upgrade is one transaction (see postback.db.migrate): it is begun here, before
Alembic is configured, so Alembic runs every migration and its version update inside it and
leaves the commit to us. A migration must therefore not use ``autocommit_block()``.
"""

from __future__ import annotations

from alembic import context

from postback.db.migrate import lock_for_upgrade, migration_engine
from postback.db.schema import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
connectable = migration_engine(url)
try:
    with connectable.connect() as connection, connection.begin():
        lock_for_upgrade(connection)
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            transactional_ddl=True,  # so it is, on SQLite too (postback.db.migrate)
        )
        context.run_migrations()
        if connection.dialect.name == "sqlite":  # the rebuilds ran with foreign keys off
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"the upgrade would leave rows pointing at rows that do "
                                   f"not exist ({broken[:5]}); nothing was changed")
finally:
    connectable.dispose()
