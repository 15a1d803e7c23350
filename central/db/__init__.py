"""Metadata in SQLAlchemy 2 (async): SQLite by default, PostgreSQL at scale, same code."""
