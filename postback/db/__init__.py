"""Storage adapter: SQLAlchemy Core tables, engines and Alembic migrations."""
