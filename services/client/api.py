"""The gateway's HTTP API as the client calls it: one method per operation, problems turned into ClientError."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx

from services.client.config import KEY_ENV, ClientConfig
from services.client.errors import ClientError, ExitCode

# The start of a task id as it is shown: its first 8 hex digits, then up to the rest (the API's `id_prefix`).
ID_PREFIX = re.compile(r"[0-9a-f]{8}[0-9a-f-]{0,28}")
# How many matches an ambiguous prefix lists.
AMBIGUOUS_SHOWN = 5
# Statuses that mean the caller asked wrongly or is not who it claims: a usage or configuration error.
USAGE_STATUSES = frozenset({400, 401, 403, 404})
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# An upload's last byte is answered once the file is stored: allow for a slow database.
UPLOAD_TIMEOUT = httpx.Timeout(300.0, connect=5.0)


def problem_message(response: httpx.Response) -> str:
    """One line from an RFC 9457 problem: `title: detail` (or what there is of them)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("title") or body.get("detail")):
        title, detail = str(body.get("title") or ""), str(body.get("detail") or "")
        message = detail if not title or title == detail else f"{title}: {detail}" if detail else title
    else:
        message = f"HTTP {response.status_code} {response.reason_phrase} from {response.request.url}"
    if response.status_code == 401:
        message += f" (check --key, {KEY_ENV} or `collect login`)"
    return message


def problem_error(response: httpx.Response) -> ClientError:
    code = ExitCode.USAGE if response.status_code in USAGE_STATUSES else ExitCode.FAILED
    return ClientError(problem_message(response), code)


class Api:
    """A session with one gateway under one API key."""

    def __init__(self, config: ClientConfig) -> None:
        if not config.api_key:
            raise ClientError(f"no API key: set {KEY_ENV}, run `collect login`, or pass --key", ExitCode.USAGE)
        self.url = config.url
        self._http = httpx.Client(base_url=config.url, timeout=TIMEOUT,
                                  headers={"Authorization": f"Bearer {config.api_key}"})

    def close(self) -> None:
        self._http.close()

    def _transport_error(self, exc: httpx.TransportError) -> ClientError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol):
            return ClientError(f"cannot reach the server at {self.url} ({exc}); is it running? "
                               "Check --url, COLLECT_URL or `collect login`", ExitCode.USAGE)
        return ClientError(f"the request to {self.url} failed: {exc or type(exc).__name__}")

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        if response.is_error:
            raise problem_error(response)
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"{response.request.url} did not answer with JSON: is {self.url} a Collect Tasks "
                              "gateway? Check --url, COLLECT_URL or `collect login`", ExitCode.USAGE) from None

    def upload(self, filename: str, file: IO[bytes]) -> dict[str, Any]:
        """POST the file as multipart field `file`, read from `file` as it is sent (never whole)."""
        return self._request("POST", "/api/upload-file/", files={"file": (filename, file, "text/csv")},
                             timeout=UPLOAD_TIMEOUT)

    def export(self, from_date: str, to_date: str, form_id: str | None) -> dict[str, Any]:
        params = {"from_date": from_date, "to_date": to_date}
        if form_id is not None:
            params["form_id"] = form_id
        return self._request("POST", "/api/export/", params=params)

    def control(self, action: str, task_id: str, wait: float | None = None) -> dict[str, Any]:
        """POST /api/{pause,resume,revoke}/{id}/, waiting up to `wait` seconds for the worker to act."""
        params = {} if wait is None else {"wait": wait}
        return self._request("POST", f"/api/{action}/{task_id}/", params=params,
                             timeout=httpx.Timeout(TIMEOUT.read + (wait or 0), connect=5.0))

    def task(self, task_id: str, events: bool = False) -> dict[str, Any]:
        return self._request("GET", f"/api/tasks/{task_id}/", params={"events": 1} if events else {})

    def tasks(self, states: tuple[str, ...] = (), kinds: tuple[str, ...] = (), id_prefix: str | None = None,
              limit: int | None = None, offset: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"state": list(states), "kind": list(kinds), "id_prefix": id_prefix,
                                  "limit": limit, "offset": offset}
        return self._request("GET", "/api/tasks/", params={k: v for k, v in params.items() if v not in (None, [])})

    @contextmanager
    def download(self, task_id: str) -> Iterator[httpx.Response]:
        """The export's file as a streaming response (read it with iter_bytes)."""
        try:
            with self._http.stream("GET", f"/api/tasks/{task_id}/download") as response:
                if response.is_error:
                    response.read()
                    raise problem_error(response)
                yield response
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None

    def resolve(self, task: str) -> str:
        """The full id of the caller's task named by `task`: a whole id, or a unique prefix of at least 8
        characters (as git abbreviates commits). Raises ClientError (usage) when none or several match."""
        wanted = task.strip().lower()
        if len(wanted) in (32, 36):
            try:
                return str(uuid.UUID(wanted))
            except ValueError:
                pass
        if not ID_PREFIX.fullmatch(wanted):
            raise ClientError(f"{task!r} is not a task id, nor its first 8 or more characters", ExitCode.USAGE)
        page = self.tasks(id_prefix=wanted, limit=AMBIGUOUS_SHOWN)
        if page["total"] == 0:
            raise ClientError(f"no task of your organization has an id starting with {wanted}", ExitCode.USAGE)
        if page["total"] > 1:
            shown = ", ".join(found["task_id"] for found in page["tasks"])
            more = ", ..." if page["total"] > len(page["tasks"]) else ""
            raise ClientError(f"task id prefix {wanted} is ambiguous: {page['total']} tasks match ({shown}{more}); "
                              "give more characters", ExitCode.USAGE)
        return page["tasks"][0]["task_id"]
