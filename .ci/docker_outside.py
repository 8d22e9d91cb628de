#!/usr/bin/env python3
"""Runs the Dockerfile's final stage without Docker (no engine runs on CI machines): copies
what it COPYs into a fresh working directory, sets its ENV, runs its CMD with the binary CI
built, then checks that the example answers over pgwire with a password and over HTTP.
The build stage's `cargo build --locked ...` is run with CI's own profile and targets (a
release build takes 40 minutes here; other flags would re-resolve features and rebuild), which
still proves the lockfile is current."""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
PASSWORD = "ci-outside-docker"


def final_stage(text):
    lines, joined = [], ""
    for raw in text.splitlines():
        if raw.strip().startswith("#"):
            continue
        joined += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            if joined.strip():
                lines.append(joined.strip())
            joined = ""
    stages = [i for i, l in enumerate(lines) if l.startswith("FROM ")]
    return lines[:stages[-1]], lines[stages[-1]:]


def main():
    build, stage = final_stage((ROOT / "Dockerfile").read_text())
    cargo = next(l for l in build if l.startswith("RUN cargo build"))
    command = shlex.split(cargo[len("RUN "):].split("&&")[0])
    assert command[:3] == ["cargo", "build", "--locked"], command
    subprocess.run(["cargo", "build", "--locked", "--workspace", "--all-targets"], cwd=ROOT,
                   check=True)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = target / "debug" / "tributary"

    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp) / "app"
        for line in stage:
            word, _, rest = line.partition(" ")
            if word == "WORKDIR":
                workdir = pathlib.Path(tmp) / rest.strip().lstrip("/")
                workdir.mkdir(parents=True, exist_ok=True)
            elif word == "COPY" and "--from" not in rest:
                source, dest = rest.split()
                shutil.copytree(ROOT / source, workdir / dest)
            elif word == "ENV":
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    env[key] = value
            elif word == "CMD":
                cmd = json.loads(rest)
        # The image's warehouse volume lives under the temporary root here.
        env["TRIBUTARY_WAREHOUSE"] = str(pathlib.Path(tmp) / env["TRIBUTARY_WAREHOUSE"].lstrip("/"))
        env["TRIBUTARY_PASSWORD"] = PASSWORD
        assert cmd[0] == "tributary", cmd
        server = subprocess.Popen([str(binary), *cmd[1:]], cwd=workdir, env=env,
                                  stdout=subprocess.PIPE, text=True)
        try:
            for line in server.stdout:
                print(line, end="")
                if line.startswith("tributary ready"):
                    break
            else:
                sys.exit("the image's command exited before it was ready")
            pg_port = env["TRIBUTARY_LISTEN"].rsplit(":", 1)[1]
            http_port = env["TRIBUTARY_HTTP"].rsplit(":", 1)[1]
            out = subprocess.run(
                ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", pg_port, "-U", "tributary", "tributary",
                 "-c", "SELECT count(*) FROM marts.kpi_daily"],
                env={**os.environ, "PGPASSWORD": PASSWORD}, capture_output=True, text=True, check=True)
            rows = int(out.stdout.strip())
            assert rows > 0, "marts.kpi_daily is empty"
            health = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5).status
            assert health == 200, health
            print(f"image command ok: marts.kpi_daily has {rows} rows, /health {health}")
        finally:
            server.kill()
            server.wait()


main()
