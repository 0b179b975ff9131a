"""The HTTPS plumbing shared by the sandbox emulators.

An emulator is a set of routes served over real TLS on 127.0.0.1 (an ephemeral port, a certificate
from the sandbox's throwaway CA). Every request is recorded, so tests can assert on what the real SDKs
sent, and faults can be scripted per route, so tests can make the vendor fail in exactly the way the
vendor fails: a status, headers and a body, a hang past the client's read timeout, a dropped
connection, or a failure *after* the real handler ran (the write happened, the response was lost).

Requests no route expects are answered 404 and kept in `unexpected`, so a test can check that nothing
called an endpoint it should not have.

`latency` (seconds, default 0) holds every response that long before it is sent, on the request's own
thread, as a network round trip would: concurrent requests wait side by side, not in turn. The
benchmark uses it to show what concurrency buys when each call costs real time.
"""

from __future__ import annotations

import functools
import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    """What a handler sees of one HTTP request."""

    method: str
    path: str  # percent-decoded path, without the query
    raw_path: str  # the path exactly as sent, query included
    query: dict[str, str]  # last value wins, as most servers do
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # named groups of the route pattern

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode("utf-8")).items()}


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list are sent as JSON; str/bytes as they are
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if self.body is None:
            return b"", headers
        if isinstance(self.body, bytes):
            return self.body, headers
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return self.body.encode("utf-8"), headers
        headers.setdefault("Content-Type", "application/json; charset=utf-8")
        return json.dumps(self.body).encode("utf-8"), headers


@dataclass
class Recorded:
    """One request as the emulator received it, and the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int
    raw_path: str = ""  # as sent, percent-encoding and query included

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None


@dataclass
class Fault:
    """A scripted misbehaviour for the requests that match `method` and `path` (a regex, full match)."""

    method: str
    path: str
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1  # how many matching requests it applies to; -1 for all of them
    hang: bool = False  # hold the request open until the emulator stops (a read timeout for the client)
    drop: bool = False  # close the connection without any response
    after: bool = False  # run the real handler first (the write happens), then answer with the fault
    when: Callable[[Request], bool] | None = None  # further narrowing, e.g. on the body
    then: Callable[[], None] | None = None  # run when the fault fires (after the handler if `after`): kill a client, signal a test

    def matches(self, request: Request) -> bool:
        if self.times == 0 or self.method != request.method:
            return False
        if not re.fullmatch(self.path, request.path):
            return False
        return self.when is None or self.when(request)


Handler = Callable[[Request], Response]


class Emulator:
    """Routes + a recorded request log + scripted faults, served over HTTPS by `serve()`."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()  # guards state of subclasses too: handlers run on many threads
        self._stopping = threading.Event()
        self.latency = 0.0  # seconds added before each response is sent (see the module docstring)
        self.requests: list[Recorded] = []
        self.unexpected: list[Recorded] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- set-up -------------------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern), handler))

    def fail(self, method: str, path: str, **kwargs: Any) -> Fault:
        """Script a fault; see `Fault` for the options. Returns it so a test can inspect `times`."""
        fault = Fault(method=method, path=path, **kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.unexpected.clear()

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, filtered by method and by a path regex (full match)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or re.fullmatch(path, r.path))
            ]

    # --- serving ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the form the configuration's `domain` keys take."""
        assert self._server is not None, "serve() first"
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"https://{self.host}"

    def serve(self, ssl_context: ssl.SSLContext) -> None:
        emulator = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes; without this each keep-alive request waits
            # for a delayed ACK (~40 ms).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the request log
                pass

            def _handle(self) -> None:
                emulator._dispatch(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._stopping.clear()  # serving again after a stop
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=functools.partial(server.serve_forever, poll_interval=0.05), name=type(self).__name__, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- dispatch -----------------------------------------------------------------------------

    def _dispatch(self, http: BaseHTTPRequestHandler) -> None:
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        split = urlsplit(http.path)
        request = Request(
            method=http.command,
            path=unquote(split.path),
            raw_path=http.path,
            query={k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in http.headers.items()},
            body=body,
        )
        fault = self._take_fault(request)
        handler = self._find_handler(request)

        if fault is not None and not fault.after:
            response = self._apply_fault(fault, http)
            if response is None:
                self._record(request, 0, expected=True)
                return
        elif handler is None:
            response = Response(404, {"error": "no such route in the sandbox", "path": request.path})
        else:
            try:
                response = handler(request)
            except Exception as exc:  # an emulator bug must show as a 500, not a hung client
                response = Response(500, {"error": "sandbox handler crashed", "detail": repr(exc)})
            if fault is not None:  # the write happened; now the response goes wrong
                response = self._apply_fault(fault, http)
                if response is None:
                    self._record(request, 0, expected=True)
                    return

        self._record(request, response.status, expected=handler is not None or fault is not None)
        if self.latency > 0:
            self._stopping.wait(self.latency)  # ends early when the emulator stops
        payload, headers = response.encode()
        headers = {**self.common_headers(request, response), **headers}
        http.send_response(response.status)
        for name, value in headers.items():
            http.send_header(name, value)
        http.send_header("Content-Length", str(len(payload)))
        http.end_headers()
        http.wfile.write(payload)

    def common_headers(self, request: Request, response: Response) -> dict[str, str]:
        """Headers every response of this emulator carries (rate limits, API usage). Override."""
        return {}

    def _apply_fault(self, fault: Fault, http: BaseHTTPRequestHandler) -> Response | None:
        if fault.then is not None:
            fault.then()
        if fault.hang:
            # Held until the emulator stops; the client's read timeout ends it first.
            self._stopping.wait()
            http.close_connection = True
            return None
        if fault.drop:
            http.close_connection = True
            try:
                http.connection.shutdown(2)
            except OSError:
                pass
            return None
        return Response(fault.status, fault.body, dict(fault.headers))

    def _take_fault(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(request):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    def _find_handler(self, request: Request) -> Handler | None:
        for method, pattern, handler in self._routes:
            if method != request.method:
                continue
            match = pattern.fullmatch(request.path)
            if match:
                request.params = {k: v for k, v in match.groupdict().items() if v is not None}
                return handler
        return None

    def _record(self, request: Request, status: int, *, expected: bool) -> None:
        recorded = Recorded(request.method, request.path, request.query, request.headers, request.body, status, request.raw_path)
        with self._lock:
            self.requests.append(recorded)
            if not expected:
                self.unexpected.append(recorded)


def now() -> float:
    """Wall clock for emulators (token expiry, rate-limit buckets); one place to read it."""
    return time.time()
