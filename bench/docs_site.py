#!/usr/bin/env python3
"""Documentation site latency with 500 models (issue 5: pages load in under 200 ms).

Builds a catalog of one table, 10 chains of 50 models each (500 models; each reads the one
before it), a view per chain and a test per model, then requests the home page and model pages
(the middle of a chain: 49 objects in its lineage graph, with and without columns) --repeat
times each over loopback HTTP and reports the median, p95 and worst time to the last byte.

    python3 bench/docs_site.py [--binary PATH] [--chains 10] [--length 50]

Only the Python standard library and `psql` are needed. The report is printed and written to
bench/results/docs_site-<date>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import result_path, TributaryServer, default_binary, machine_line, require_binary, \
    without
TARGET_MS = 200


def project(chains: int, length: int) -> str:
    out = ["CREATE SCHEMA raw;", "CREATE SCHEMA marts;",
           "CREATE TABLE raw.events (id BIGINT, account TEXT, amount BIGINT, day DATE);",
           "INSERT INTO raw.events SELECT value, 'a' || (value % 50), value % 997, "
           "DATE '2026-01-01' + CAST(value % 300 AS INT) FROM generate_series(1, 10000);"]
    for c in range(chains):
        out.append(f"CREATE MODEL marts.c{c}_m0 WITH (description = 'chain {c} start') AS "
                   f"SELECT id, account, amount, day FROM raw.events WHERE id % {chains} = {c};")
        for k in range(1, length):
            out.append(f"CREATE MODEL marts.c{c}_m{k} WITH (description = 'chain {c} step {k}') AS "
                       f"SELECT id, account, amount + {k} AS amount, day FROM marts.c{c}_m{k - 1};")
        out.append(f"CREATE VIEW marts.c{c}_summary AS SELECT account, sum(amount) AS total "
                   f"FROM marts.c{c}_m{length - 1} GROUP BY account;")
        for k in range(length):
            out.append(f"CREATE TEST c{c}_m{k}_id ON marts.c{c}_m{k} EXPECT UNIQUE (id);")
    out.append("RUN TESTS;")
    return "\n".join(out)


def fetch(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url) as response:
        body = response.read()
        status = response.status
    elapsed = time.perf_counter() - start
    if status != 200:
        sys.exit(f"{url}: HTTP {status}")
    return elapsed, len(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", type=Path, default=default_binary())
    ap.add_argument("--chains", type=int, default=10)
    ap.add_argument("--length", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    require_binary(args.binary)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = TributaryServer(args.binary, work)
        try:
            script = work / "project.sql"
            script.write_text(project(args.chains, args.length))
            started = time.perf_counter()
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(server.port), "-U", "tributary", "-d", "tributary",
                            "-f", str(script)], check=True, env=without("PG"),
                           stdout=subprocess.DEVNULL)
            build_s = time.perf_counter() - started
            site = f"http://127.0.0.1:{server.http_port}"
            middle = args.length // 2
            pages = {
                "home page (/)": f"{site}/",
                f"model page (chain middle, {args.length - 1} objects in lineage)":
                    f"{site}/objects/marts/c0_m{middle}",
                "model page with column lineage": f"{site}/objects/marts/c0_m{middle}?columns=1",
            }
            rows = []
            for label, url in pages.items():
                fetch(url)  # warm-up
                times = sorted(fetch(url)[0] * 1000 for _ in range(args.repeat))
                size = fetch(url)[1]
                p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
                rows.append((label, statistics.median(times), p95, times[-1], size))
        finally:
            server.stop()

    models = args.chains * args.length
    machine = machine_line()
    lines = [f"# Documentation site latency, {dt.date.today()}", "",
             f"Binary `{args.binary}`; machine: {machine}. Catalog: {models} models "
             f"({args.chains} chains of {args.length}), {args.chains} views, {models} tests "
             f"(built and tested in {build_s:.0f} s). Time to the last byte over loopback HTTP, "
             f"{args.repeat} requests per page. Target: under {TARGET_MS} ms.", "",
             "| page | median ms | p95 ms | worst ms | size KiB |", "|---|---|---|---|---|"]
    for label, median, p95, worst, size in rows:
        lines.append(f"| {label} | {median:.1f} | {p95:.1f} | {worst:.1f} | {size / 1024:.0f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    out = result_path("docs_site")
    out.write_text(report)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
