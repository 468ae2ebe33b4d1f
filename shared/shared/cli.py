"""``bitloot`` command: ``bitloot dev`` starts everything; ``bitloot migrate`` upgrades schemas."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print("usage: bitloot {dev,migrate} [...]")
        return 0
    command, rest = args[0], args[1:]
    if command == "dev":
        from shared.launcher import main as dev

        return dev(rest)
    if command == "migrate":
        from shared.db.migrations import upgrade
        from shared.topology import SERVICES

        parser = argparse.ArgumentParser(prog="bitloot migrate")
        parser.add_argument("services", nargs="*", default=[s.name for s in SERVICES])
        ns = parser.parse_args(rest)
        url = os.environ["DATABASE_URL"]
        for name in ns.services:
            upgrade(name, url)
            print(f"migrated {name}")
        return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
