"""The whole system as real processes, started by the same launcher as ``make dev``.

Used by the browser tests and ``tests-e2e``: every component gets a free port and the data lives
in a temporary folder, so a running ``make dev`` on the default ports is not disturbed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from shared.testing.helpers import free_port
from shared.topology import SERVICES


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    def url(self, component: str) -> str:
        return f"http://127.0.0.1:{self.ports[component]}"

    @property
    def web_url(self) -> str:
        return self.url("web")

    @property
    def emulator_url(self) -> str:
        return self.url("emulator")

    @property
    def maildir(self) -> Path:
        return self.home / "mail"

    def component_log(self, name: str) -> str:
        path = self.home / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pids(self, name: str) -> list[int]:
        """Process ids of one launcher child (e.g. ``orders-worker``)."""
        return [proc.pid for proc in self.processes().get(name, [])]

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The launcher's children of this stack, by component (PostgreSQL's backends, started
        by pg_ctl, do not carry our environment and are not among them)."""
        out: dict[str, list[psutil.Process]] = {}
        for proc in psutil.process_iter():
            try:
                env = proc.environ()
            except psutil.Error:  # processes come and go while we look
                continue
            name = env.get("BITLOOT_COMPONENT")
            if name and env.get("BITLOOT_HOME") == str(self.home):
                out.setdefault(name, []).append(proc)
        return out


def stack_env(
    home: Path, extra: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, int]]:
    ports = {
        "web": free_port(),
        "emulator": free_port(),
        "pg": free_port(),
        "nats": free_port(),
        "nats_monitor": free_port(),
        "s3": free_port(),
        "smtp": free_port(),
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "NATS_URL", "S3_ENDPOINT_URL", "SMTP_URL", "S3_BUCKET"}
    }
    env.update(
        {
            "BITLOOT_HOME": str(home),
            "WEB_PORT": str(ports["web"]),
            "EMULATOR_PORT": str(ports["emulator"]),
            "BITLOOT_PG_PORT": str(ports["pg"]),
            "BITLOOT_NATS_PORT": str(ports["nats"]),
            "BITLOOT_NATS_MONITOR_PORT": str(ports["nats_monitor"]),
            "BITLOOT_S3_PORT": str(ports["s3"]),
            "BITLOOT_SMTP_PORT": str(ports["smtp"]),
            "LOG_JSON": "true",
            # A developer's own .env (possibly pointing at the real provider) stays out of
            # the test stacks: they run on the emulator with generated secrets.
            "BITLOOT_ENV_FILE": "",
        }
    )
    for service in SERVICES:
        ports[service.name] = free_port()
        ports[f"{service.name}-worker"] = free_port()
        env[f"{service.name.upper()}_PORT"] = str(ports[service.name])
        env[f"{service.name.upper()}_WORKER_PORT"] = str(ports[f"{service.name}-worker"])
        ports[f"{service.name}-worker-1"] = free_port()  # used when BITLOOT_WORKER_REPLICAS=2
        env[f"{service.name.upper()}_WORKER_PORT_1"] = str(ports[f"{service.name}-worker-1"])
    env.update(extra or {})
    return env, ports


@contextmanager
def running_stack(extra_env: dict[str, str] | None = None, timeout: float = 180) -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="bitloot-stack-"))
    env, ports = stack_env(home, extra_env)
    log_path = home / "launcher.log"
    log = log_path.open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own launcher
        [sys.executable, "-m", "shared.launcher", "--home", str(home)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack = Stack(home=home, env=env, process=proc, log_path=log_path, ports=ports)
    try:
        deadline = time.monotonic() + timeout
        while "BitLoot is ready" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(_startup_failure(home, log_path.read_text(errors="replace")))
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"stack not ready:\n{log_path.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.2)
        yield stack
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def _startup_failure(home: Path, launcher_log: str) -> str:
    """The launcher's output, plus the log of the component it names as the one that exited:
    the stack's directory is removed afterwards, and that log says why."""
    report = f"launcher exited:\n{launcher_log[-4000:]}"
    for name in re.findall(r"^(\S+) exited during start-up", launcher_log, re.M):
        component_log = home / "logs" / f"{name}.log"
        if component_log.exists():
            report += f"\n--- {name}.log (end) ---\n"
            report += component_log.read_text(errors="replace")[-3000:]
    return report
