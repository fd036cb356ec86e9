"""A real multi-node Ray cluster on this machine, for tests: ``ray start --head`` plus ``ray start --address``.

Each node is a ``ray start --block`` process in a session of its own, with its own
ports (so that other clusters on the machine are left alone) and a temporary
directory of its own; on exit every node gets SIGTERM (``--block`` then stops
the node's processes), and whatever still runs from this cluster's temporary
directory is killed by pid. Nothing here uses ``ray stop``, which would stop
every Ray process of the user.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ports() -> list[str]:
    names = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
    return [f"--{name}={free_port()}" for name in names]


@dataclass
class Cluster:
    address: str
    temp: str  # its temporary directory: names its processes

    def task_workers(self) -> list[int]:
        return task_workers(self.temp)


@contextmanager
def local_cluster(nodes: int = 2, cpus: int = 1, object_store_bytes: int = 80 * 2**20, timeout: float = 180):
    """Yield a :class:`Cluster` of ``nodes`` nodes with ``cpus`` CPUs each; torn down on exit."""
    ray = str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="jpray", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    logs = Path(tempfile.mkdtemp(prefix="jpraylogs"))
    # RAY_AUTH_MODE: no token in ~/.ray (shared by every user of the machine); the cluster listens on 127.0.0.1 only
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    port = free_port()
    common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
              f"--object-store-memory={object_store_bytes}", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []
    try:
        head = [ray, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}",
                f"--ray-client-server-port={free_port()}", f"--dashboard-port={free_port()}", *common]
        procs.append(_start(head, logs / "head.log", env, timeout))
        for k in range(1, nodes):
            node = [ray, "start", f"--address=127.0.0.1:{port}", *common, *_node_ports()]
            procs.append(_start(node, logs / f"node{k}.log", env, timeout))
        yield Cluster(f"127.0.0.1:{port}", temp)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        _kill_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)


def _start(cmd: list[str], log: Path, env: dict, timeout: float) -> subprocess.Popen:
    out = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.time() + timeout
    while b"Ray runtime started" not in log.read_bytes():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"{' '.join(cmd[:3])} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return proc


def _kill_leftovers(temp: str) -> None:
    """SIGKILL every process whose command line names this cluster's temporary directory, and their children."""
    doomed = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp.encode() in (entry / "cmdline").read_bytes():
                    doomed.add(int(entry.name))
            except OSError:
                continue
    doomed |= {pid for pid in _all_pids() if _parent(pid) in doomed}
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _all_pids() -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def task_workers(temp_marker: str, title: str = "ray::_invoke") -> list[int]:
    """Pids of this cluster's worker processes now running a task (their title is ``ray::FUNCTION``)."""
    found = []
    for pid in _all_pids():
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(title.encode()):
            parent = _parent(pid)
            try:
                raylet = (Path("/proc") / str(parent) / "cmdline").read_bytes()
            except OSError:
                continue
            if temp_marker.encode() in raylet:
                found.append(pid)
    return found
