"""S3 from moto's server (``python -m shared.devstack.s3 --port 9000``).

moto keeps objects in memory: after a restart the bucket is recreated empty. Fulfillment
regenerates an item deterministically when its object is missing, so links keep working.
"""

from __future__ import annotations

import argparse
import signal
import threading

from moto.server import ThreadedMotoServer


def main() -> None:
    parser = argparse.ArgumentParser(description="moto S3 server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    print(f"s3 (moto) on {args.host}:{args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
