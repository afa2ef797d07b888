"""Gateway middleware: request ids and API-key authentication for /api/ routes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import falcon

from services.gateway.problems import Problem
from shared import orgs


@dataclass(frozen=True)
class Caller:
    organization_id: uuid.UUID
    key_prefix: str

    @property
    def actor(self) -> str:
        return f"api:{self.key_prefix}"


class RequestId:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.request_id = req.get_header("X-Request-ID") or uuid.uuid4().hex
        resp.set_header("X-Request-ID", req.context.request_id)


class ApiKeyAuth:
    """Every /api/ request carries `Authorization: Bearer <key>`; the caller's organization goes to
    req.context.caller."""

    def __init__(self, db) -> None:
        self.db = db

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params) -> None:
        if not req.path.startswith("/api/"):
            return
        challenge = {"WWW-Authenticate": 'Bearer realm="collect"'}
        header = req.get_header("Authorization")
        if not header:
            raise Problem(falcon.HTTP_401, "send your API key as 'Authorization: Bearer <key>'",
                          headers=challenge)
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Problem(falcon.HTTP_401, "the Authorization header must be 'Bearer <key>'", headers=challenge)
        with self.db.transaction() as cur:
            found = orgs.authenticate(cur, key.strip())
        if found is None:
            raise Problem(falcon.HTTP_401, "the API key is not valid", headers=challenge)
        req.context.caller = Caller(*found)
