#!/usr/bin/env python3
"""Incremental refresh benchmark for Tributary (issue 3).

Builds a three-model chain over a seeded fact table and compares incremental refreshes with a
full refresh, in wall-clock time and in the server's peak memory:

    bench.facts ──> bench.stg_facts ──┐
                                      ├──> bench.enriched ──> bench.daily
    bench.accounts ───────────────────┘

    bench.facts      table, --rows rows (+1% appended, then 1% with a changed account_id)
    bench.accounts   table, 10,000 rows
    bench.stg_facts  typing, a filter, amount_eur by a CASE on the currency (unique_key id)
    bench.enriched   stg_facts JOIN accounts (unique_key id)
    bench.daily      count(*), count, sum, avg, min, max per day and category (unique_key day, category)

Phases (every measured statement is timed by psql's \\timing and the server's peak RSS is read
from /proc/<pid>/status after resetting it through /proc/<pid>/clear_refs):

    load      CREATE TABLE + server-side COPY of the generated CSV files (context only)
    build     CREATE MODEL for each model (runs its first refresh)
    full      REFRESH MODEL <m> FULL for each model: the baseline
    append    COPY 1% new rows into bench.facts, then REFRESH MODEL <m> for each model
    keys      UPDATE 1% of the facts' account_id (join key and group), then REFRESH MODEL <m>

After `append` and after `keys` every model is compared with its defining query run ad hoc
(row counts, duplicate unique keys, and a full outer join on the unique key comparing every
column), and tributary.runs is read for the strategy, reason and rows written of each refresh.

By default the server is restarted before every measured statement, so each statement's time
and peak memory start from the same freshly started process and are not inflated by memory a
previous statement left in the allocator (see --restart).

Only the Python standard library and the `psql` command-line client are needed. The result is
a Markdown report on stdout and in bench/results/incremental-<date>.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BENCH_DIR, REPO_DIR, machine, source_commit, wait_ready

SEED = 20_240_603
DATA_VERSION = 1
ACCOUNTS = 10_000
DAYS = 365  # base facts span one year ...
APPEND_DAYS = 4  # ... and appended facts mostly land on the four days after it
LATE_SHARE = 0.05  # share of appended rows that arrive late, in the last 30 days of the year
START_DAY = dt.date(2025, 1, 1)
CURRENCIES = ["EUR", "USD", "GBP", "CHF"]
CURRENCY_WEIGHTS = [55, 30, 10, 5]
CATEGORIES = [
    "groceries", "travel", "fuel", "restaurants", "utilities", "rent",
    "health", "education", "electronics", "clothing", "insurance", "fees",
]
REGIONS = ["eu-west", "eu-central", "eu-north", "uk", "us-east", "us-west"]
CHUNK_ROWS = 200_000

# Targets from issue 3: incremental time as a share of the full refresh's time.
TIME_TARGETS = {"append": 0.05, "keys": 0.10}

MARKER = ".tributary-bench"  # marks a workdir this script created (its wh/ may be deleted)


# --------------------------------------------------------------------------------------------
# The SQL under test
# --------------------------------------------------------------------------------------------

FACTS_DDL = """CREATE TABLE bench.facts (
    id BIGINT NOT NULL,
    account_id INT,
    ts TIMESTAMP,
    amount NUMERIC(18,2),
    currency TEXT)"""

ACCOUNTS_DDL = """CREATE TABLE bench.accounts (
    account_id INT NOT NULL,
    category TEXT,
    region TEXT)"""


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    options: str
    query: str
    key: tuple[str, ...]
    columns: tuple[str, ...]  # non-key columns, compared during verification

    @property
    def short(self) -> str:
        return self.name.split(".")[-1]

    def create_sql(self) -> str:
        return f"CREATE MODEL {self.name} WITH ({self.options}) AS\n{self.query}"


# The outer CAST of amount_eur is deliberate: without it the server stores the CASE with the
# type of its first branch, NUMERIC(18,2), and rounds the other branches' NUMERIC(25,6) values
# into it, so the model would differ from its own query (the verification shows it).
MODELS = [
    Model(
        name="bench.stg_facts",
        options="unique_key = 'id'",
        query="""SELECT id,
       account_id,
       ts,
       CAST(ts AS DATE) AS day,
       currency,
       amount,
       CAST(CASE currency
           WHEN 'EUR' THEN amount
           WHEN 'USD' THEN amount * CAST('0.92' AS NUMERIC(4,2))
           WHEN 'GBP' THEN amount * CAST('1.17' AS NUMERIC(4,2))
           WHEN 'CHF' THEN amount * CAST('1.06' AS NUMERIC(4,2))
       END AS NUMERIC(20,4)) AS amount_eur
FROM bench.facts
WHERE amount <> 0""",
        key=("id",),
        columns=("account_id", "ts", "day", "currency", "amount", "amount_eur"),
    ),
    Model(
        name="bench.enriched",
        options="unique_key = 'id'",
        query="""SELECT s.id, s.account_id, s.ts, s.day, s.currency, s.amount_eur, a.category, a.region
FROM bench.stg_facts s
JOIN bench.accounts a ON a.account_id = s.account_id""",
        key=("id",),
        columns=("account_id", "ts", "day", "currency", "amount_eur", "category", "region"),
    ),
    Model(
        name="bench.daily",
        options="unique_key = 'day, category'",
        query="""SELECT day,
       category,
       count(*) AS n,
       count(amount_eur) AS n_eur,
       sum(amount_eur) AS total_eur,
       avg(amount_eur) AS avg_eur,
       min(amount_eur) AS min_eur,
       max(amount_eur) AS max_eur
FROM bench.enriched
GROUP BY day, category""",
        key=("day", "category"),
        columns=("n", "n_eur", "total_eur", "avg_eur", "min_eur", "max_eur"),
    ),
]

# Moves 1% of the facts to another account: a new join partner (category, region) and,
# in bench.daily, another group.
KEY_UPDATE_SQL = (
    f"UPDATE bench.facts SET account_id = account_id % {ACCOUNTS} + 1 WHERE id % 100 = 7"
)


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def copy_sql(table: str, path: Path) -> str:
    """Server-side COPY of a CSV file (the server reads the absolute path itself)."""
    return f"COPY {table} FROM {sql_literal(str(path))} WITH (FORMAT csv, HEADER true)"


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def write_facts(path: Path, first_id: int, count: int, day_of, rng: random.Random) -> None:
    """Writes `count` fact rows with ids from `first_id` as CSV; `day_of(i)` gives the day
    index of the i-th row of this file."""
    days = [str(START_DAY + dt.timedelta(days=d)) for d in range(DAYS + APPEND_DAYS)]
    times = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86_400)]
    cents = [f"{c:02d}" for c in range(100)]
    cum_weights = []
    total = 0
    for w in CURRENCY_WEIGHTS:
        total += w
        cum_weights.append(total)
    r = rng.random
    with open(path, "w", encoding="ascii", newline="") as f:
        f.write("id,account_id,ts,amount,currency\n")
        for lo in range(0, count, CHUNK_ROWS):
            n = min(CHUNK_ROWS, count - lo)
            currencies = rng.choices(CURRENCIES, cum_weights=cum_weights, k=n)
            lines = []
            for k in range(n):
                i = lo + k
                c = 0 if r() < 0.01 else 1 + int(r() * 500_000)
                lines.append(
                    f"{first_id + i},{1 + int(r() * ACCOUNTS)},"
                    f"{days[day_of(i)]} {times[int(r() * 86_400)]},"
                    f"{c // 100}.{cents[c % 100]},{currencies[k]}\n"
                )
            f.write("".join(lines))


def write_accounts(path: Path, rng: random.Random) -> None:
    with open(path, "w", encoding="ascii", newline="") as f:
        f.write("account_id,category,region\n")
        f.write("".join(
            f"{a},{rng.choice(CATEGORIES)},{rng.choice(REGIONS)}\n"
            for a in range(1, ACCOUNTS + 1)
        ))


@dataclasses.dataclass
class DataFiles:
    facts: Path
    append: Path
    accounts: Path
    rows: int
    append_rows: int


def generate_data(folder: Path, rows: int) -> DataFiles:
    """Generates (or reuses, when made by the same script version and seed) the CSV files."""
    append_rows = max(1, rows // 100)
    files = DataFiles(
        facts=folder / "facts.csv",
        append=folder / "facts_append.csv",
        accounts=folder / "accounts.csv",
        rows=rows,
        append_rows=append_rows,
    )
    manifest = folder / "manifest.json"
    wanted = {"version": DATA_VERSION, "seed": SEED, "rows": rows, "append_rows": append_rows}
    if manifest.exists() and json.loads(manifest.read_text()) == wanted:
        log(f"reusing the data files in {folder}")
        return files
    folder.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)
    started = time.monotonic()
    log(f"generating {rows:,} fact rows, {append_rows:,} appended rows, {ACCOUNTS:,} accounts")
    write_accounts(files.accounts, random.Random(SEED))
    # Base facts: ids 1..rows, days increasing with the id over one year.
    write_facts(files.facts, 1, rows, lambda i: i * DAYS // rows, random.Random(SEED + 1))
    # Appended facts: the following days, except a few late arrivals within the last month.
    late = random.Random(SEED + 3)

    def append_day(i: int) -> int:
        if late.random() < LATE_SHARE:
            return DAYS - 1 - int(late.random() * 30)
        return DAYS + i * APPEND_DAYS // append_rows

    write_facts(files.append, rows + 1, append_rows, append_day, random.Random(SEED + 2))
    manifest.write_text(json.dumps(wanted))
    size = (files.facts.stat().st_size + files.append.stat().st_size) / 2**20
    log(f"data written ({size:,.0f} MiB) in {time.monotonic() - started:.1f} s")
    return files


# --------------------------------------------------------------------------------------------
# Server and client
# --------------------------------------------------------------------------------------------


class SqlError(Exception):
    def __init__(self, sql: str, message: str):
        super().__init__(f"the server rejected:\n{sql}\n-- error: {message}")
        self.sql = sql
        self.message = message


class Abort(Exception):
    """A failure (already recorded) after which the remaining phases cannot run."""


def rejected(where: str, sql: str, message: str) -> str:
    """A Markdown list item with the statement the server rejected and its error."""
    body = "\n".join("    " + line for line in sql.splitlines())
    error = "\n".join("    " + line for line in message.splitlines())
    return f"{where}: the server rejected\n\n    ```sql\n{body}\n    ```\n\n{error}\n"


class Server:
    """One `tributary serve` process on ephemeral ports, with its memory counters."""

    def __init__(self, binary: Path, warehouse: Path, workdir: Path, memory_mb: int | None):
        self.binary = binary
        self.warehouse = warehouse
        self.workdir = workdir
        self.memory_mb = memory_mb
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.starts = 0
        # Background housekeeping (compaction, checkpoints, vacuum) would land in the middle of
        # some measurements; binaries that have it run with it off.
        help_text = subprocess.run([str(binary), "serve", "--help"], capture_output=True,
                                   text=True).stdout
        self.housekeeping_flag = "--housekeeping-interval" in help_text
        # Only the flags given here apply: no TRIBUTARY_* settings from the caller's shell
        # (the server runs in the workdir, so no tributary.toml is read either).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRIBUTARY_")}

    def start(self, timeout: float = 120.0) -> None:
        cmd = [
            str(self.binary), "serve",
            "--listen", "127.0.0.1:0",
            "--http", "127.0.0.1:0",
            "--warehouse", str(self.warehouse),
        ]
        if self.memory_mb:
            cmd += ["--memory-mb", str(self.memory_mb)]
        if self.housekeeping_flag:
            cmd += ["--housekeeping-interval", "off"]
        self.starts += 1
        log_file = open(self.log_path, "a", encoding="utf-8")
        log_file.write(f"\n===== start {self.starts}: {' '.join(cmd)}\n")
        log_file.flush()
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=subprocess.PIPE, stderr=log_file,
            stdin=subprocess.DEVNULL, text=True, env=self.env,
        )
        log_file.close()
        ports = wait_ready(self.proc, timeout)
        if ports is None:
            self.stop()
            sys.exit(f"the server did not start; see {self.log_path}")
        self.port = ports[0]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reset_peak(self) -> None:
        """Resets VmHWM to the current RSS (Linux >= 4.0)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def memory_kib(self) -> dict[str, int]:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return {
            k: int(v.split()[0])
            for k, v in (line.split(":", 1) for line in status.splitlines() if ":" in line)
            if k in ("VmRSS", "VmHWM")
        }

    def psql(self, sql: str, timing: bool = False) -> tuple[list[list[str]], float | None]:
        """Runs one statement; returns its rows (tab-separated fields) and, with `timing`, the
        statement's time in seconds as psql measured it (connection set-up excluded)."""
        cmd = [
            "psql", "-X", "-q", "-A", "-t", "-F", "\t",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", "tributary", "-d", "tributary",
            "-v", "ON_ERROR_STOP=1",
        ]
        if timing:
            cmd += ["-c", "\\timing on"]
        cmd += ["-c", sql]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGAPPNAME"] = "tributary-bench"
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            message = done.stderr.strip() or f"psql exited with {done.returncode}"
            if not self.alive():
                message += f" (the server exited; see {self.log_path})"
            raise SqlError(sql, message)
        rows, seconds = [], None
        for line in done.stdout.splitlines():
            m = re.match(r"Time: ([0-9.]+) ms", line)
            if m:
                seconds = float(m.group(1)) / 1000
            elif line:
                rows.append(line.split("\t"))
        return rows, seconds


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    phase: str
    label: str  # a model name, or what the step did
    sql: str
    seconds: float | None = None
    start_mib: float | None = None
    peak_mib: float | None = None
    error: str | None = None
    run: dict | None = None  # the matching row of tributary.runs


class Bench:
    def __init__(self, server: Server, restart: str):
        self.server = server
        self.restart = restart  # "statement" | "phase" | "never"
        self.steps: list[Step] = []
        self.changes: list[Step] = []  # input changes, reported apart from the refreshes
        self.errors: list[str] = []  # Markdown items for the report
        self.last_run_id = 0

    def measure(self, phase: str, label: str, sql: str, fresh: bool) -> Step:
        """Runs one statement with its time and the server's peak RSS; `fresh` restarts the
        server first (subject to --restart). A rejected statement is recorded, not raised."""
        if fresh:
            self.server.restart()
        step = Step(phase, label, sql)
        self.server.reset_peak()
        step.start_mib = self.server.memory_kib()["VmRSS"] / 1024
        started = time.monotonic()
        try:
            _, step.seconds = self.server.psql(sql, timing=True)
        except SqlError as e:
            step.error = e.message
            self.errors.append(rejected(f"{phase} / {label}", sql, e.message))
        if step.seconds is None:  # no \timing line (an error): the client's wall clock
            step.seconds = time.monotonic() - started
        if self.server.alive():
            step.peak_mib = self.server.memory_kib()["VmHWM"] / 1024
        else:
            self.server.start()  # keep going; the report shows the error
        self.steps.append(step)
        status = f"ERROR {step.error}" if step.error else "ok"
        log(f"  {phase:7} {label:26} {fmt(step.seconds, 3):>9} s  "
            f"peak {fmt(step.peak_mib, 0):>6} MiB  {status}")
        return step

    def change(self, label: str, sql: str, fresh: bool = True) -> Step:
        """Changes the inputs (measured for context, kept out of the refresh table); the
        benchmark cannot go on when the server rejects it."""
        step = self.measure("change", label, sql, fresh=fresh and self.restart != "never")
        self.changes.append(self.steps.pop())
        self.attach_runs([])
        if step.error:
            raise Abort(f"the benchmark stopped: {label} failed")
        return step

    def fresh_for(self, index: int) -> bool:
        return self.restart == "statement" or (self.restart == "phase" and index == 0)

    def phase(self, phase: str, statements: list[tuple[str, str]]) -> list[Step]:
        log(f"phase {phase}")
        steps = [
            self.measure(phase, label, sql, self.fresh_for(i))
            for i, (label, sql) in enumerate(statements)
        ]
        self.attach_runs(steps)
        if phase == "build" and any(s.error for s in steps):
            failed = next(s for s in steps if s.error)
            raise Abort(f"the benchmark stopped: model {failed.label} could not be created")
        return steps

    def attach_runs(self, steps: list[Step]) -> None:
        """Matches the refreshes tributary.runs recorded since the last call to the steps."""
        try:
            rows, _ = self.server.psql(
                "SELECT run_id, model, trigger, strategy, reason, status, rows_read, "
                "rows_written, duration_ms, error FROM tributary.runs "
                f"WHERE run_id > {self.last_run_id} ORDER BY run_id"
            )
        except SqlError as e:
            self.errors.append(rejected("reading tributary.runs", e.sql, e.message))
            return
        keys = ["run_id", "model", "trigger", "strategy", "reason", "status", "rows_read",
                "rows_written", "duration_ms", "error"]
        runs = [dict(zip(keys, r)) for r in rows]
        for run in runs:
            self.last_run_id = max(self.last_run_id, int(run["run_id"]))
            for step in steps:
                if step.run is None and run["model"].endswith("." + step.label):
                    step.run = run
                    break
        for step in steps:
            if step.run and step.run["status"] != "succeeded" and not step.error:
                self.errors.append(f"{step.phase} / {step.label}: run {step.run['run_id']} "
                                   f"{step.run['status']}: {step.run['error']}")


@dataclasses.dataclass
class Check:
    after: str
    model: str
    model_rows: int | None = None
    query_rows: int | None = None
    duplicate_keys: int | None = None
    differing: int | None = None
    seconds: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.error is None and self.model_rows == self.query_rows
                and self.duplicate_keys == 0 and self.differing == 0)


def verify(server: Server, after: str) -> list[Check]:
    """Compares every model with its defining query run ad hoc: row counts, duplicate unique
    keys in the model, and rows whose key is on one side only or whose columns differ."""
    log(f"verifying the models after {after}")
    checks = []
    for model in MODELS:
        on = " AND ".join(f"m.{k} = q.{k}" for k in model.key)
        # Each comparison is parenthesized: the server's SQL parser (sqlparser-rs before
        # apache/datafusion-sqlparser-rs#2436) reads `a IS DISTINCT FROM b OR c` as
        # `a IS DISTINCT FROM (b OR c)`.
        differs = " OR ".join(
            [f"m.{model.key[0]} IS NULL", f"q.{model.key[0]} IS NULL"]
            + [f"(m.{c} IS DISTINCT FROM q.{c})" for c in model.columns]
        )
        keys = ", ".join(model.key)
        # Four statements rather than one with scalar subqueries: the server plans
        # `SELECT (SELECT count(*) FROM (SELECT 1 AS a) q WHERE q.a > 0)` as a constant NULL.
        statements = [
            f"SELECT count(*) FROM {model.name}",
            f"SELECT count(*) FROM ({model.query}) q",
            f"SELECT count(*) FROM (SELECT {keys} FROM {model.name} GROUP BY {keys} "
            "HAVING count(*) > 1) d",
            f"SELECT count(*) FROM {model.name} m FULL OUTER JOIN ({model.query}) q "
            f"ON {on} WHERE {differs}",
        ]
        check = Check(after, model.short)
        started = time.monotonic()
        try:
            check.model_rows, check.query_rows, check.duplicate_keys, check.differing = (
                int(server.psql(sql)[0][0][0]) for sql in statements
            )
        except SqlError as e:
            check.error = e.message
        check.seconds = time.monotonic() - started
        log(f"  {model.short:10} {'ok' if check.ok else 'MISMATCH'}: model {check.model_rows} "
            f"rows, query {check.query_rows}, duplicate keys {check.duplicate_keys}, differing "
            f"{check.differing}{', ' + check.error if check.error else ''}")
        checks.append(check)
    return checks


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def ratio(a: float | None, b: float | None, least: float = 0.0) -> float | None:
    """a / b, or None when b is missing or not above `least`."""
    return a / b if a is not None and b is not None and b > least else None


def report(args, data: DataFiles, bench: Bench, checks: list[Check], started: dt.datetime) -> str:
    m = machine()
    binary_time = dt.datetime.fromtimestamp(args.binary.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    profile = "release" if "release" in args.binary.parts else (
        "debug" if "debug" in args.binary.parts else "unknown profile")
    out = [
        f"# Tributary incremental refresh benchmark, {started:%Y-%m-%d %H:%M}",
        "",
        f"- Input: {data.rows:,} fact rows, {ACCOUNTS:,} accounts; append {data.append_rows:,} rows "
        f"(1%); key change: `{KEY_UPDATE_SQL}` (1% of the rows)",
        f"- Binary: `{args.binary}` ({profile}, built {binary_time}); source tree "
        f"`{REPO_DIR}` at {source_commit()} (the binary does not record its commit)",
        f"- Machine: {m.get('cpu', '?')}, {m['nproc']} CPUs, {m.get('memory', '?')} RAM, "
        f"Linux {m['kernel']}",
        f"- Server restarted before each measured {args.restart}"
        if args.restart != "never" else "- Server never restarted between statements",
        f"- Server query memory limit: "
        f"{f'{args.memory_mb} MiB' if args.memory_mb else 'default (4096 MiB)'}"
        + ("; background housekeeping off" if bench.server.housekeeping_flag else ""),
        "- Time: the statement as psql's `\\timing` measured it; server: `tributary.runs.duration_ms`. "
        "Peak RSS: the server's VmHWM after resetting it just before the statement; "
        "start: its VmRSS at that moment.",
        "",
        "## Refreshes",
        "",
        "| phase | model | time (s) | server (s) | peak RSS (MiB) | start RSS (MiB) | strategy "
        "| rows written | reason |",
        "|---|---|--:|--:|--:|--:|---|--:|---|",
    ]
    for s in bench.steps:
        run = s.run or {}
        server_s = int(run["duration_ms"]) / 1000 if run.get("duration_ms") else None
        strategy = run.get("strategy") or ("ERROR" if s.error else "–")
        if run.get("status") not in (None, "succeeded"):
            strategy += f" ({run['status']})"
        reason = (s.error or run.get("reason") or "").replace("|", "\\|").replace("\n", " ")
        out.append(
            f"| {s.phase} | {s.label} | {fmt(s.seconds, 3)} | {fmt(server_s, 3)} "
            f"| {fmt(s.peak_mib, 0)} | {fmt(s.start_mib, 0)} | {strategy} "
            f"| {fmt(run.get('rows_written'))} | {reason} |"
        )
    out += [
        "",
        "## Incremental vs full refresh",
        "",
        "Time ratio: incremental time / `REFRESH ... FULL` time; memory ratio: incremental peak "
        "RSS / full peak RSS (the target); growth ratio: the same for peak minus start RSS, the "
        "memory the refresh itself added. Chain: the three refreshes' summed time and largest "
        "peak (growth: largest growth).",
        "",
        "| change | model | time ratio | target | memory ratio | target | growth ratio | met |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    by = {(s.phase, s.label): s for s in bench.steps}
    for phase, target in TIME_TARGETS.items():
        rows = [(m.short, [by.get((phase, m.short))], [by.get(("full", m.short))]) for m in MODELS]
        rows.append(("chain", [by.get((phase, m.short)) for m in MODELS],
                     [by.get(("full", m.short)) for m in MODELS]))
        for label, incr, full in rows:
            if any(s is None or s.error or s.peak_mib is None for s in incr + full):
                out.append(f"| {phase} | {label} | – | ≤ {pct(target)} | – | < 100% | – | error |")
                continue
            t = ratio(sum(s.seconds for s in incr), sum(s.seconds for s in full))
            mem = ratio(max(s.peak_mib for s in incr), max(s.peak_mib for s in full))
            growth = ratio(max(max(0.0, s.peak_mib - s.start_mib) for s in incr),
                           max(max(0.0, s.peak_mib - s.start_mib) for s in full), least=1.0)
            met = t is not None and mem is not None and t <= target and mem < 1
            out.append(f"| {phase} | {label} | {pct(t)} | ≤ {pct(target)} | {pct(mem)} "
                       f"| < 100% | {pct(growth)} | {'yes' if met else 'no'} |")
    out += [
        "",
        "## Input changes (not part of the ratios)",
        "",
        "| step | time (s) | peak RSS (MiB) | result |",
        "|---|--:|--:|---|",
    ]
    for s in bench.changes:
        out.append(f"| {s.label} | {fmt(s.seconds, 3)} | {fmt(s.peak_mib, 0)} "
                   f"| {('ERROR ' + s.error) if s.error else 'ok'} |")
    out += [
        "",
        "## Correctness: each model against its query run ad hoc",
        "",
        "| after | model | model rows | query rows | duplicate keys | differing rows | check (s) | result |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for c in checks:
        result = "ok" if c.ok else ("ERROR " + c.error if c.error else "MISMATCH")
        out.append(f"| {c.after} | {c.model} | {fmt(c.model_rows)} | {fmt(c.query_rows)} "
                   f"| {fmt(c.duplicate_keys)} | {fmt(c.differing)} | {fmt(c.seconds, 1)} | {result} |")
    if bench.errors:
        out += ["", "## Errors", ""] + [f"- {e}" for e in bench.errors]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache/tributary-target")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000,
                   help="fact rows before the append (default: 10,000,000)")
    p.add_argument("--binary", type=Path,
                   help="the tributary binary (default: $CARGO_TARGET_DIR/release/tributary, "
                        "CARGO_TARGET_DIR defaulting to ~/.cache/tributary-target as in .ci/run; "
                        "else target/release/tributary in the repository)")
    p.add_argument("--workdir", type=Path,
                   help="folder for the data, the warehouse and the server log (default: a new "
                        "temporary folder); generated data in it is reused by later runs")
    p.add_argument("--keep", action="store_true",
                   help="keep the workdir (data, warehouse, server.log) afterwards")
    p.add_argument("--restart", choices=["statement", "phase", "never"], default="statement",
                   help="restart the server before each measured statement (default), before "
                        "each phase, or never")
    p.add_argument("--memory-mb", type=int,
                   help="the server's --memory-mb (query memory before spilling)")
    p.add_argument("--output", type=Path,
                   help="report file (default: bench/results/incremental-<date>.md)")
    args = p.parse_args()
    if args.rows < 100:
        p.error("--rows must be at least 100")
    if args.binary is None:
        candidates = [target / "release" / "tributary", REPO_DIR / "target/release/tributary"]
        args.binary = next((c for c in candidates if c.is_file()), candidates[0])
    args.binary = args.binary.expanduser().resolve()
    if not args.binary.is_file():
        p.error(f"no binary at {args.binary}; build it with `cargo build --release -p "
                "tributary-server` or pass --binary")
    if shutil.which("psql") is None:
        p.error("the psql client is needed (e.g. apt-get install postgresql-client)")
    return args


def prepare_workdir(args) -> Path:
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="tributary-bench-"))
    else:
        workdir = args.workdir.expanduser().resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    warehouse = workdir / "wh"
    if warehouse.exists():
        if not (workdir / MARKER).exists():
            sys.exit(f"{warehouse} exists and was not made by this script; remove it or pick "
                     "another --workdir")
        shutil.rmtree(warehouse)
    (workdir / MARKER).touch()
    (workdir / "server.log").unlink(missing_ok=True)
    return workdir


def run(args, workdir: Path) -> int:
    started = dt.datetime.now()
    data = generate_data(workdir / "data", args.rows)
    server = Server(args.binary, workdir / "wh", workdir, args.memory_mb)
    bench = Bench(server, args.restart)
    checks: list[Check] = []
    server.start()
    try:
        log(f"server up on port {server.port} (log: {server.log_path})")
        for sql in ["CREATE SCHEMA bench", FACTS_DDL, ACCOUNTS_DDL]:
            server.psql(sql)
        bench.change("load facts", copy_sql("bench.facts", data.facts), fresh=False)
        bench.change("load accounts", copy_sql("bench.accounts", data.accounts), fresh=False)
        bench.phase("build", [(m.short, m.create_sql()) for m in MODELS])
        bench.phase("full", [(m.short, f"REFRESH MODEL {m.name} FULL") for m in MODELS])

        bench.change("append 1% (COPY)", copy_sql("bench.facts", data.append))
        bench.phase("append", [(m.short, f"REFRESH MODEL {m.name}") for m in MODELS])
        checks += verify(server, "append")

        bench.change("change keys of 1% (UPDATE)", KEY_UPDATE_SQL)
        bench.phase("keys", [(m.short, f"REFRESH MODEL {m.name}") for m in MODELS])
        checks += verify(server, "keys")
    except SqlError as e:
        log(str(e))
        bench.errors.append(rejected("set-up", e.sql, e.message))
    except Abort as e:
        log(str(e))
        bench.errors.append(str(e))
    finally:
        server.stop()

    text = report(args, data, bench, checks, started)
    print(text)
    output = args.output or BENCH_DIR / "results" / f"incremental-{started:%Y-%m-%d}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    log(f"report written to {output}")
    failed = bench.errors or any(not c.ok for c in checks)
    return 1 if failed else 0


def main() -> int:
    args = parse_args()
    workdir = prepare_workdir(args)
    log(f"workdir {workdir}")
    try:
        return run(args, workdir)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
