"""The benchmark's S3 endpoint, in a process of its own: ``python -m benchmarks.s3server``.

Runs the test kit's moto server (real HTTP on 127.0.0.1) and prints one JSON line with
its endpoint and credentials, then serves until its standard input closes (the parent
exits or closes the pipe) or it gets SIGTERM. A process of its own so that the server's
CPU and memory are not charged to the sync being measured, as with a real S3.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

from siem_plugins.testing.s3server import S3Server


def main() -> int:
    server = S3Server()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def watch_stdin() -> None:
        # EOF on stdin means the parent is gone: never outlive it.
        sys.stdin.buffer.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(
        json.dumps(
            {
                "endpoint": server.endpoint_url,
                "region": server.region,
                "access_key_id": server.access_key_id,
                "secret_access_key": server.secret_access_key,
            }
        ),
        flush=True,
    )
    try:
        done.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
