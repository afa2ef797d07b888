"""Health endpoints: liveness (no dependencies) and readiness (PostgreSQL and Redis reachable)."""

from __future__ import annotations

import json

import falcon
import redis

HEALTH_JSON = "application/health+json"


def _reply(resp: falcon.Response, body: dict) -> None:
    resp.content_type = HEALTH_JSON
    resp.status = falcon.HTTP_503 if body["status"] == "fail" else falcon.HTTP_200
    resp.text = json.dumps(body)


class LiveResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _reply(resp, {"status": "pass", "description": "gateway process is up"})


class ReadyResource:
    def __init__(self, db, redis_url: str, timeout: float = 2.0) -> None:
        self.db = db
        self.redis_url = redis_url
        self.timeout = timeout

    def _postgres(self) -> dict:
        try:
            with self.db.transaction() as cur:
                cur.execute("SET LOCAL statement_timeout = %s", (int(self.timeout * 1000),))
                cur.execute("SELECT 1")
            return {"componentType": "datastore", "status": "pass"}
        except Exception as exc:  # any failure means "not ready", whatever its cause
            return {"componentType": "datastore", "status": "fail", "output": str(exc).strip()}

    def _redis(self) -> dict:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        try:
            client.ping()
            return {"componentType": "datastore", "status": "pass"}
        except Exception as exc:
            return {"componentType": "datastore", "status": "fail", "output": str(exc)}
        finally:
            client.close()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = {"postgresql:connection": [self._postgres()], "redis:connection": [self._redis()]}
        failed = any(c[0]["status"] == "fail" for c in checks.values())
        _reply(resp, {"status": "fail" if failed else "pass", "checks": checks})
