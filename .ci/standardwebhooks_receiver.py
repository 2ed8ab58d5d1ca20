#!/usr/bin/env python3
"""A Standard Webhooks receiver that checks hookpool's signatures with the reference library.

Usage:
    python3 standardwebhooks_receiver.py --secret whsec_... [--secret whsec_...] \
        --port-file PATH --expect N [--timeout 60]

Binds 127.0.0.1 on an ephemeral port, writes the port number to --port-file (atomically, so a
poller never reads half a number), and verifies every POST with the official `standardwebhooks`
package (pip install standardwebhooks). It answers 204 when a request verifies and 401 when it
does not; other methods get 405 and count as failures.

With one secret a request must verify with it. With several, the sender signs with all of them
(key rotation), so the request must verify with each secret on its own.

Exits after N requests or after --timeout seconds: 0 if N requests arrived and all verified,
otherwise 1 with a line per failure. Secrets are never printed.

The library rejects timestamps more than 5 minutes from now, so the sender must use the
current time. Bodies must be UTF-8: the library decodes them before verifying.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook


class Results:
    """Outcomes of the requests so far, shared by the handler threads."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.lock = threading.Lock()
        self.outcomes: list[tuple[str, str | None]] = []  # (webhook-id, failure or None)
        self.done = threading.Event()

    def add(self, msg_id: str, failure: str | None) -> None:
        with self.lock:
            self.outcomes.append((msg_id, failure))
            if len(self.outcomes) >= self.expect:
                self.done.set()

    def snapshot(self) -> list[tuple[str, str | None]]:
        with self.lock:
            return list(self.outcomes)


def check(webhooks: list[Webhook], body: bytes, headers: dict[str, str]) -> str | None:
    """Returns None if the request verifies with every secret, else what went wrong."""
    failures = []
    for i, wh in enumerate(webhooks, start=1):
        try:
            wh.verify(body, headers, json_parse=False)
        except Exception as e:  # the library also raises ValueError/UnicodeDecodeError
            failures.append(f"secret #{i}: {type(e).__name__}: {e}")
    return "; ".join(failures) or None


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length", "0")))


def make_handler(webhooks: list[Webhook], results: Results) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 so that the sender's keep-alive connections are exercised too.
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = read_body(self)
            headers = {k: v for k, v in self.headers.items()}
            msg_id = self.headers.get("webhook-id", "<no webhook-id>")
            failure = check(webhooks, body, headers)
            self.send_response(204 if failure is None else 401)
            if failure is not None:
                self.send_header("Content-Length", "0")
            self.end_headers()
            self.wfile.flush()
            # Counted only after the answer is out, so exiting never cuts off the last reply.
            results.add(msg_id, failure)

        def do_other(self) -> None:
            read_body(self)
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.wfile.flush()
            results.add(f"{self.command} {self.path}", "method not allowed")

        do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_other

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write("receiver: " + (format % args) + "\n")

    return Handler


def write_port_file(path: str, port: int) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".port-")
    with os.fdopen(fd, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret", action="append", required=True, help="whsec_... (repeatable)")
    parser.add_argument("--port-file", required=True, help="where to write the chosen port")
    parser.add_argument("--expect", type=int, required=True, help="requests to wait for")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args(argv)
    if args.expect < 1:
        parser.error("--expect must be at least 1")

    try:
        webhooks = [Webhook(s) for s in args.secret]
    except Exception as e:
        # The exception text could quote the secret, so print only its type.
        print(f"receiver: invalid --secret ({type(e).__name__})", file=sys.stderr)
        return 1

    results = Results(args.expect)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(webhooks, results))
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, name="receiver", daemon=True)
    serving.start()
    try:
        write_port_file(args.port_file, server.server_address[1])
        arrived_in_time = results.done.wait(args.timeout)
    finally:
        server.shutdown()
        server.server_close()
        serving.join(timeout=5)

    outcomes = results.snapshot()
    failed = [(msg_id, why) for msg_id, why in outcomes if why is not None]
    for msg_id, why in failed:
        print(f"receiver: FAILED {msg_id}: {why}", file=sys.stderr)
    if not arrived_in_time:
        print(
            f"receiver: timed out after {args.timeout:g}s with {len(outcomes)} of "
            f"{args.expect} requests",
            file=sys.stderr,
        )
    if arrived_in_time and not failed:
        print(f"receiver: {len(outcomes)} requests verified with {len(webhooks)} secret(s)")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
