"""The gateway's gunicorn worker: gthread, except that a connection gets a thread only once its whole
request header block has arrived, within HEADER_TIMEOUT_SECONDS, and its body reads time out after
BODY_STALL_SECONDS.

gthread hands every connection to a thread that then blocks reading the request: a few dozen clients
that open a connection and never finish their headers hold every thread, and nobody else is answered,
health checks included. Here the main loop collects header bytes with non-blocking reads on its selector
(a stalled client costs a socket and a few bytes, no thread), closes connections whose header block is
not complete by their deadline, and passes the collected bytes to gunicorn's own parser, which therefore
never waits on the socket for a header. What it cannot do: a client that sends its headers and then
dribbles its body still holds a thread for as long as it keeps sending (BODY_STALL_SECONDS bounds each
silence, not the whole body), like under any thread-per-request server.
"""

from __future__ import annotations

import errno
import json
import selectors
import time
from functools import partial

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from shared.config import Settings

# The end of a request's header block (RFC 9112; gunicorn's parser requires CRLF line ends too).
HEADER_END = b"\r\n\r\n"
# More header bytes than gunicorn's own limits allow (request line 4094 + 100 fields of 8190): a client
# still sending headers past this is not sending a request gunicorn would accept.
MAX_HEADER_BYTES = 4096 + 100 * 8192
RECV_BYTES = 65536


def write_problem(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it cannot parse (a malformed request line, header or chunk), as an RFC
    9457 problem like every other error of the API instead of gunicorn's HTML page."""
    body = json.dumps({"type": "about:blank", "title": reason, "status": status_int,
                       "detail": mesg or reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn has no hook for the format of its own error answers: its workers call util.write_error.
util.write_error = write_problem


class HeaderBufferedConn(TConn):
    """A gthread connection that carries the header bytes read for it by the main loop."""

    def __init__(self, cfg, sock, client, server) -> None:
        super().__init__(cfg, sock, client, server)
        self.header_bytes = b""
        self.header_deadline = 0.0
        self.body_stall_seconds: float | None = None

    def headers_complete(self) -> bool:
        # Empty lines before a request line are allowed (RFC 9112 2.2) and end nothing.
        return HEADER_END in self.header_bytes.lstrip(b"\r\n")

    def init(self) -> None:
        """Runs in the worker thread before each request: the parser gets the collected bytes first,
        and every read from the socket (the body) times out after a silence of BODY_STALL_SECONDS."""
        super().init()
        self.sock.settimeout(self.body_stall_seconds)
        if self.header_bytes:
            self.parser.unreader.unread(self.header_bytes)
            self.header_bytes = b""


class HeaderTimeoutWorker(ThreadWorker):
    """gunicorn's gthread worker with a header deadline (use `worker_class =
    "services.gateway.worker.HeaderTimeoutWorker"`; see services/gateway/gunicorn_config.py)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = Settings.from_env()
        self.header_timeout = float(settings.header_timeout_seconds)
        self.body_stall_seconds = float(settings.body_stall_seconds)
        # Connections whose header block is incomplete, in deadline order (all share one timeout).
        self.awaiting_headers: dict[HeaderBufferedConn, None] = {}

    def accept(self, listener) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = HeaderBufferedConn(self.cfg, client_sock, client_addr, listener.getsockname())
        conn.body_stall_seconds = self.body_stall_seconds
        self.enqueue_req(conn)

    def enqueue_req(self, conn) -> None:
        """Every way a connection reaches a thread (new, kept alive, pipelined) comes here: it goes to a
        thread once its header block is complete, and waits on the selector until then."""
        if not isinstance(conn, HeaderBufferedConn):  # not ours: gthread's own path
            super().enqueue_req(conn)
            return
        if conn.parser is not None:
            # Bytes a previous request's body drain read ahead belong to the next request's headers.
            conn.header_bytes += conn.parser.unreader.take_buffered()
        if conn.headers_complete():
            self._to_thread(conn)
            return
        conn.sock.setblocking(False)
        conn.header_deadline = time.monotonic() + self.header_timeout
        self.awaiting_headers[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_header_bytes, conn))

    def _to_thread(self, conn: HeaderBufferedConn) -> None:
        # gthread's own wait for a first byte is moot: the whole header block is here.
        conn.data_ready = True
        super().enqueue_req(conn)

    def _stop_awaiting(self, conn: HeaderBufferedConn) -> None:
        self.awaiting_headers.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _drop(self, conn: HeaderBufferedConn) -> None:
        self._stop_awaiting(conn)
        self.nr_conns -= 1
        conn.close()

    def _on_header_bytes(self, conn: HeaderBufferedConn, sock) -> None:
        try:
            received = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not received:  # the client closed the connection
            self._drop(conn)
            return
        conn.header_bytes += received
        if conn.headers_complete():
            self._stop_awaiting(conn)
            self._to_thread(conn)
        elif len(conn.header_bytes) > MAX_HEADER_BYTES:
            self.log.info("closing %s: header block larger than %d bytes", conn.client, MAX_HEADER_BYTES)
            self._drop(conn)

    def murder_pending(self) -> None:
        """Also close the connections whose header block did not arrive by its deadline (run by the
        main loop at least once a second)."""
        super().murder_pending()
        now = time.monotonic()
        expired = []
        for conn in self.awaiting_headers:
            if conn.header_deadline > now:
                break
            expired.append(conn)
        for conn in expired:
            self.log.debug("closing %s: no complete request header within %ss", conn.client, self.header_timeout)
            self._drop(conn)

