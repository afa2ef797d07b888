"""Gateway middleware: request ids and API-key authentication for /api/ routes."""

from __future__ import annotations

import re
import uuid

import falcon

from services.http.caller import Caller
from services.http.problems import Problem
from shared import logs, orgs

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestId:
    """Names each request (the caller's X-Request-ID, or a new id), in the response and in every log line
    written while serving it."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header("X-Request-ID") or ""
        # A caller's id is kept only if it is safe to echo in a header and a log line.
        req.context.request_id = given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        resp.set_header("X-Request-ID", req.context.request_id)
        logs.request_id.set(req.context.request_id)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource,
                         req_succeeded: bool) -> None:
        logs.request_id.set(None)


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
        with self.db.reading() as cur:
            found = orgs.authenticate(cur, key.strip())
        if found is None:
            raise Problem(falcon.HTTP_401, "the API key is not valid", headers=challenge)
        req.context.caller = Caller(*found)
