"""What every benchmark script shares: the server binary, starting `tributary serve` on ephemeral
ports, running SQL through psql, and describing the machine and the source in reports.

Standard library only, like the scripts that import it (they run as `python3 bench/x.py`, so
this folder is on the import path).
"""

from __future__ import annotations

import os
import platform
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent


def default_binary() -> Path:
    """The release binary in the target directory `.ci/run` uses (or the repository's own)."""
    target = os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache" / "tributary-target"
    if not Path(target).exists():
        target = REPO_DIR / "target"
    return Path(target) / "release" / "tributary"


def require_binary(binary: Path) -> None:
    if not binary.exists():
        sys.exit(f"no server binary at {binary} (cargo build --release -p tributary-server)")


def without(prefix: str) -> dict[str, str]:
    """This process's environment without the variables starting with `prefix`."""
    return {k: v for k, v in os.environ.items() if not k.startswith(prefix)}


def server_environment() -> dict[str, str]:
    """The environment a benchmark's server runs in: none of the caller's `TRIBUTARY_`
    settings except `TRIBUTARY_LOG` (a log filter changes what the log says, not the
    measurement, e.g. `TRIBUTARY_LOG=info,tributary_engine::refresh::executor=debug` times
    each refresh's planning)."""
    env = without("TRIBUTARY_")
    if "TRIBUTARY_LOG" in os.environ:
        env["TRIBUTARY_LOG"] = os.environ["TRIBUTARY_LOG"]
    return env


def wait_ready(proc: subprocess.Popen, timeout: float) -> tuple[int, int] | None:
    """The (pgwire, http) ports from the server's ready line, or None when it exits or
    `timeout` passes first. Its stdout keeps being read afterwards so it never blocks."""
    lines: queue.Queue[str | None] = queue.Queue()

    def drain(stream) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, args=(proc.stdout,), daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            line = ""
        if line is None or time.monotonic() > deadline:
            return None
        ready = re.search(r"tributary ready pgwire=[^ ]*:(\d+) http=[^ ]*:(\d+)", line)
        if ready:
            return int(ready.group(1)), int(ready.group(2))


class TributaryServer:
    """One `tributary serve` process on ephemeral ports with a fresh warehouse.

    Only the flags given here apply: no TRIBUTARY_* settings from the caller's shell, and the
    server runs in `workdir`, so no tributary.toml of the caller's is read. The scheduler and
    background housekeeping are off unless asked for, so nothing lands in the middle of a
    measurement.
    """

    def __init__(self, binary: Path, workdir: Path, warehouse: Path | None = None,
                 extra_args: list[str] | None = None, log_name: str = "server.log",
                 timeout: float = 120.0) -> None:
        self.workdir = workdir
        self.log_path = workdir / log_name
        cmd = [str(binary), "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
               "--warehouse", str(warehouse or workdir / "warehouse")]
        extra_args = list(extra_args or [])
        if "--scheduler" not in extra_args:
            extra_args += ["--scheduler", "off"]
        if "--housekeeping-interval" not in extra_args:
            extra_args += ["--housekeeping-interval", "off"]
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n===== {' '.join(cmd + extra_args)}\n")
            log.flush()
            self.proc = subprocess.Popen(cmd + extra_args, cwd=workdir, stdout=subprocess.PIPE,
                                         stderr=log, stdin=subprocess.DEVNULL, text=True,
                                         env=server_environment())
        ports = wait_ready(self.proc, timeout)
        if ports is None:
            self.stop()
            sys.exit(f"the server did not start; see {self.log_path}")
        self.port, self.http_port = ports

    @property
    def pid(self) -> int:
        return self.proc.pid

    def psql_args(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", "tributary", "-d", "tributary"]

    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=tributary dbname=tributary"

    def sql(self, sql: str) -> str:
        """Runs SQL through psql (unaligned, tuples only); exits with the error on failure."""
        cmd = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", *self.psql_args(),
               "-c", sql]
        done = subprocess.run(cmd, capture_output=True, text=True, env=without("PG"),
                              check=False)
        if done.returncode != 0:
            sys.exit(f"tributary failed: {sql}\n{done.stderr}")
        return done.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def machine() -> dict[str, str]:
    info = {"nproc": str(os.cpu_count()), "kernel": platform.release(),
            "cpu": platform.processor() or platform.machine()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory"] = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return info


def machine_line() -> str:
    m = machine()
    return f"{m['cpu']}, {m['nproc']} CPUs, {m.get('memory', '? GiB')}, Linux {m['kernel']}"


def source_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench", ":!README.md")
    return commit + (" with uncommitted changes" if dirty else "")


def result_path(stem: str) -> Path:
    """Where a report goes: `results/<stem>-<date>.md`, or with the source commit added when a
    report of that day from another run is already there (runs on one day are kept apart)."""
    import datetime as dt
    out = BENCH_DIR / "results" / f"{stem}-{dt.date.today().isoformat()}.md"
    if out.exists():
        commit = source_commit().split()[0][:7]
        out = out.with_name(f"{out.stem}-{commit}.md")
    return out
