"""`python -m nowpayments_emulator [--host 127.0.0.1] [--port 8010]`."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace

import uvicorn

from .app import create_app
from .config import DEFAULT_PORT, EmulatorConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="nowpayments_emulator", description="Run the NOWPayments emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    args = parser.parse_args(argv)
    # uvicorn configures only its own loggers; this makes each IPN attempt visible too.
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # our own IPN line says more
    config = EmulatorConfig.from_env()
    if "EMULATOR_PUBLIC_URL" not in os.environ:
        # Links must point at where we actually listen, not at the default port.
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        config = replace(config, public_url=f"http://{host}:{args.port}")
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
