"""The SQL family of the store: SQLite (embedded default), PostgreSQL and MariaDB/MySQL through
SQLAlchemy Core.

Modules: ``schema`` (tables, indexes, the UTC datetime type), ``engine`` (URI schemes, SQLite
locking, driver errors), ``core`` (the transaction runner and compare-and-set), ``rows`` (values
to rows and back), and the parts of the store: ``jobs``, ``uows``, ``boxes``, ``queue`` (the
embedded message queue) and ``store``.
"""

from __future__ import annotations

from db.backends.sql.store import SqlStore

__all__ = ["SqlStore"]
