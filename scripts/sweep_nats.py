#!/usr/bin/env python3
"""Deletes JetStream streams left behind by test runs that failed before
their cleanup, and keeps one anchor stream (see `anchor`): the streams of `wharf-test.*` queues (WHARF_wharf-test...,
WHARFDELAY_wharf-test...) and the KV buckets of test stores
(KV_wharftest_...), and the event streams of the subject tests
(WHARFTEST_...) and of examples/events.rs (EVENTS_EXAMPLE). Nothing
else is touched. Plain NATS protocol over a
socket, so that it needs no package."""
import json
import socket
import sys
import time

PREFIXES = ("WHARF_wharf-test", "WHARFDELAY_wharf-test", "KV_wharftest_", "WHARFTEST_", "EVENTS_EXAMPLE")


class Nats:
    def __init__(self, host="127.0.0.1", port=4222):
        self.sock = socket.create_connection((host, port), timeout=5)
        self.buf = b""
        self._line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.sweep.> 1\r\n')
        self.n = 0

    def _line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def request(self, subject, payload):
        self.n += 1
        inbox = f"_INBOX.sweep.{self.n}"
        body = json.dumps(payload).encode()
        self.sock.sendall(f"PUB {subject} {inbox} {len(body)}\r\n".encode() + body + b"\r\n")
        deadline = time.time() + 5
        while time.time() < deadline:
            line = self._line()
            if line.startswith(b"PING"):
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                parts = line.split()
                size = int(parts[-1])
                while len(self.buf) < size + 2:
                    self.buf += self.sock.recv(65536)
                data, self.buf = self.buf[:size], self.buf[size + 2:]
                if parts[1].decode() == inbox:
                    return json.loads(data)
            elif line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())
        raise TimeoutError(subject)


def main():
    try:
        nats = Nats()
    except OSError as error:
        print(f"sweep: NATS not reachable ({error}); skipped")
        return 0
    names, offset = [], 0
    while True:
        page = nats.request("$JS.API.STREAM.NAMES", {"offset": offset})
        if "error" in page:
            print(f"sweep: JetStream: {page['error']}; skipped")
            return 0
        names += page.get("streams") or []
        offset = len(names)
        if offset >= page.get("total", 0) or not page.get("streams"):
            break
    doomed = [n for n in names if n.startswith(PREFIXES)]
    for name in doomed:
        nats.request(f"$JS.API.STREAM.DELETE.{name}", {})
    print(f"sweep: deleted {len(doomed)} leftover test streams and KV buckets on NATS")
    anchor(nats)
    return 0


# nats-server (2.9) removes an account's storage directory with its last
# file stream, and a stream created at that moment fails ("could not create
# storage directory", 10077): seen once in CI, when the sweep had left no
# stream and parallel tests created and deleted theirs. One small stream
# that nobody deletes keeps the directory.
ANCHOR = "WHARFTESTANCHOR"


def anchor(nats):
    config = {
        "name": ANCHOR,
        "subjects": ["wharf-test-anchor.keep"],
        "storage": "file",
        "max_msgs": 1,
    }
    answer = nats.request(f"$JS.API.STREAM.CREATE.{ANCHOR}", config)
    error = answer.get("error")
    # 10058: it exists already (same name).
    if error and error.get("err_code") != 10058:
        print(f"sweep: could not keep the anchor stream: {error}")
    else:
        print(f"sweep: anchor stream {ANCHOR} in place")


if __name__ == "__main__":
    sys.exit(main())
