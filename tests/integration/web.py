"""Real HTTP servers on the loopback for tests: one serving web inputs or archives, one
receiving callbacks."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

Answer = Callable[[str], tuple[int, bytes]]
"""For a request path: the status and, for 200, the body."""


@contextmanager
def serving(answer: Answer) -> Iterator[str]:
    """Serve GET requests with `answer` until the block ends; yields the base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answer(self.path)
            if status != 200:
                self.send_error(status)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    with running(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        yield url


@dataclass(frozen=True)
class Post:
    """A request a `receiving` server got: its path, headers and body."""

    path: str
    headers: dict[str, str]
    body: bytes


@contextmanager
def receiving(host: str = "127.0.0.1", port: int = 0) -> Iterator[tuple[str, list[Post]]]:
    """Answer POSTs with 204 and record them until the block ends; yields the base URL and
    the list they are appended to (in the order they came)."""
    posts: list[Post] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            posts.append(Post(self.path, dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    with running(http.server.ThreadingHTTPServer((host, port), Handler)) as url:
        yield url, posts


@contextmanager
def running(server: http.server.HTTPServer) -> Iterator[str]:
    """Serve with `server` in a thread until the block ends; yields its base URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{server.server_address[0]!s}:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
