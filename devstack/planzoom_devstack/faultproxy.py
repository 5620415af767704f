"""An HTTP proxy on 127.0.0.1 that injects S3 faults and latency, for tests
and benchmarks.

For each request it may answer ``503 SlowDown`` (the S3 throttling error,
which S3 clients retry), ``403 AccessDenied`` (a bucket policy's refusal,
which they do not), drop the connection without an answer (a reset), hold it and never answer
(a hang, for requests whose method and path match ``hang_match``), or add a
fixed delay before forwarding to the upstream endpoint. Decisions come from
a seeded random generator; counts are kept per outcome.

Run alone: ``python -m planzoom.faultproxy --upstream http://127.0.0.1:9000
--port 9001 --slowdown 0.1 --reset 0.05 --delay-ms 20``.
"""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
DENIED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)
#: The S3 errors a fault answers with: status, reason, body.
_ANSWERS = {"slowdown": (503, "Slow Down", SLOWDOWN_BODY),
            "deny": (403, "Forbidden", DENIED_BODY)}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te",
               "trailer", "upgrade"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that give up on a slowed or reset request are expected


class FaultProxy:
    """``FaultProxy(upstream).start()``; then point clients at ``url``.

    ``slowdown``, ``deny``, ``reset`` and ``hang`` are shares of the requests whose
    "METHOD /path" contains ``match`` (0..1; all requests by default; the
    others are forwarded and not counted);
    ``delay`` is seconds added to every request. All may be changed while
    running; a hung request is held, unanswered, until :meth:`release` or
    the proxy stops (setting ``hang`` back to 0 only stops new ones).
    """

    def __init__(self, upstream: str, port: int = 0, *, slowdown: float = 0.0,
                 reset: float = 0.0, delay: float = 0.0, seed: int = 1):
        self.upstream = urlsplit(upstream)
        self.slowdown, self.reset, self.delay = slowdown, reset, delay
        self.hang, self.deny, self.match = 0.0, 0.0, ""
        self._stopped = threading.Event()
        self._released = threading.Event()
        #: "METHOD /path" of the latest requests, as they arrive.
        self.seen: deque[str] = deque(maxlen=10_000)
        self.counts: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Let go of the requests held so far (their connections close)."""
        self._released.set()
        self._released = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, request: str) -> str | None:
        """The fault for this request, "forward", or None: not one of ours."""
        if self.match not in request:
            return None
        with self._lock:
            r = self._random.random()
        for outcome, share in (("slowdown", self.slowdown), ("deny", self.deny),
                               ("reset", self.reset), ("hang", self.hang)):
            if r < share:
                return outcome
            r -= share
        return "forward"

    def _hold(self) -> None:
        """Answer nothing until :meth:`release` or the proxy stops."""
        self._released.wait()

    def _upstream(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port,
                                              timeout=120)
            self._local.conn = conn
        return conn

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                proxy.seen.append(f"{self.command} {self.path}")
                outcome = proxy._decide(f"{self.command} {self.path}")
                if outcome is not None:
                    with proxy._lock:
                        proxy.counts[outcome] += 1
                if proxy.delay:
                    time.sleep(proxy.delay)
                if outcome == "hang":
                    proxy._hold()
                    self.close_connection = True
                    return
                if outcome == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.close_connection = True
                    self.connection.close()
                    return
                if outcome in _ANSWERS:
                    status, reason, answer = _ANSWERS[outcome]
                    self.send_response(status, reason)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                for attempt in (1, 2):
                    conn = proxy._upstream()
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                        break
                    except (ConnectionError, http.client.HTTPException, OSError):
                        conn.close()
                        proxy._local.conn = None
                        if attempt == 2:
                            raise
                self.send_response(resp.status, resp.reason)
                head = self.command == "HEAD"
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP_BY_HOP and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = _handle

        return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--slowdown", type=float, default=0.0)
    ap.add_argument("--reset", type=float, default=0.0)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    proxy = FaultProxy(a.upstream, a.port, slowdown=a.slowdown, reset=a.reset,
                       delay=a.delay_ms / 1000, seed=a.seed).start()
    print(f"fault proxy on {proxy.url} -> {a.upstream}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    main()
