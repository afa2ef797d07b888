"""Apply the SQL migrations in shared/migrations (yoyo keeps a lock, so concurrent runs are safe)."""

from __future__ import annotations

from pathlib import Path

from yoyo import get_backend, read_migrations

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def migrate(database_url: str) -> int:
    """Bring the schema up to date; returns how many migrations were applied."""
    backend = get_backend(database_url)
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return len(pending)
    finally:
        backend.connection.close()
