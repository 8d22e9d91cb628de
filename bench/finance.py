#!/usr/bin/env python3
"""The financial pipeline on Tributary, DuckDB and PostgreSQL (issue 6).

Generates the example project's data with `tributary generate --transactions N`, loads the
same raw inputs into each system and builds the same model DAG (the CREATE MODEL / CREATE VIEW
queries of models/20..80, in file order), then:

  build        every model from scratch: wall time, and peak memory of the engine
               (Tributary's server, DuckDB's process, PostgreSQL's backend)
  incremental  1% new transactions (a new history file) and 0.1% updated bank transactions,
               then REFRESH ALL on Tributary against each peer's full rebuild
  serving      p50/p99 of dashboard-style point and range queries over pgwire (Tributary and
               PostgreSQL, psycopg, extended protocol), and a 5-million-row result through
               psql (COPY) and psycopg

The SQL is the project's, with the rewrites each peer needs listed in REWRITES (PostgreSQL has
no TRY_CAST and its generate_series is a set-returning function). The raw inputs have the same
declared types everywhere. Data tests are not run (the peers have none), and Tributary's
scheduler and housekeeping are off.

    python3 -m pip install -r bench/requirements.txt
    cargo build --release -p tributary-server
    python3 bench/finance.py --transactions 1000000      # also 10000000, 50000000

Results are printed and written to bench/results/finance-<N>-<date>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import result_path, REPO_DIR, TributaryServer, default_binary, machine_line, \
    require_binary, source_commit

MODEL_FILES = ["20_staging.sql", "30_intermediate.sql", "40_marts.sql", "50_kpis.sql",
               "60_alerts.sql", "70_forecast.sql", "80_reports.sql"]

# Raw inputs: name -> (columns, file under the data folder, format).
RAW = {
    "raw.chart_of_accounts": ("gl_code INT, gl_name TEXT, gl_type TEXT, category TEXT",
                              "chart_of_accounts.csv", "csv"),
    "raw.accounts": ("account_id INT, name TEXT, business_unit TEXT, currency TEXT, kind TEXT, "
                     "opened_on DATE", "accounts.csv", "csv"),
    "raw.counterparties": ("counterparty_id INT, name TEXT, country TEXT, kind TEXT",
                           "counterparties.csv", "csv"),
    "raw.fx_history": ("day TEXT, currency TEXT, rate_to_usd DOUBLE PRECISION",
                       "fx_rates.json", "json"),
    "raw.transaction_history": ("transaction_id BIGINT, account_id INT, counterparty_id INT, "
                                "gl_code INT, booked_at TEXT, value_date TEXT, amount TEXT, "
                                "currency TEXT, description TEXT", "transactions", "csvdir"),
    "raw.fx_latest": ("currency TEXT, rate_to_usd DOUBLE PRECISION, _loaded_at TIMESTAMPTZ",
                      None, None),
    "raw.card_payments": ("payment_id BIGINT, account_id INT, merchant TEXT, "
                          "amount NUMERIC(18,2), currency TEXT, authorized_at TIMESTAMPTZ",
                          "card_payments", "csvdir"),
    "raw.bank_accounts": ("account_id INT, iban TEXT, business_unit TEXT, currency TEXT, "
                          "status TEXT, updated_at TIMESTAMPTZ", "bank/accounts.csv", "csv"),
    "raw.bank_transactions": ("transaction_id BIGINT, account_id INT, counterparty_id INT, "
                              "gl_code INT, booked_at TIMESTAMPTZ, value_date DATE, "
                              "amount NUMERIC(18,2), currency TEXT, description TEXT, "
                              "status TEXT, updated_at TIMESTAMPTZ", "bank/transactions.csv",
                              "csv"),
}

# The history file of the incremental phase's new transactions (sorts after the others).
NEW_FILE = "zz-new.csv"

# What each peer needs changed in the project's SQL (pattern, replacement).
REWRITES = {
    "postgres": [
        (r"TRY_CAST\((\w+) AS NUMERIC\(18,2\)\)",
         r"(CASE WHEN \1 ~ '^-?[0-9]+(\\.[0-9]+)?$' THEN CAST(\1 AS NUMERIC(18,2)) END)"),
        (r"unnest\(generate_series\(", "(generate_series("),
    ],
    "duckdb": [],
}


def models(project: Path) -> list[tuple[str, str, str, str]]:
    """(kind, name, query, Tributary options) of every CREATE MODEL / CREATE VIEW, in file
    order. Of the options only those that change results or strategies are kept (unique_key);
    schedules, descriptions and objectives do not matter to a benchmark."""
    out = []
    for file in MODEL_FILES:
        text = "\n".join(l for l in (project / file).read_text().splitlines()
                         if not l.lstrip().startswith("--"))
        for statement in split(text):
            m = re.match(r"\s*CREATE\s+(MODEL|VIEW)\s+([\w.]+)\s*", statement, re.I)
            if not m:
                continue
            rest = statement[m.end():]
            options = ""
            if rest.upper().startswith("WITH"):
                end = skip_parens(rest, rest.index("("))
                key = re.search(r"unique_key\s*=\s*'[^']*'", rest[:end])
                options = f"WITH ({key.group(0)}) " if key else ""
                rest = rest[end:]
            query = re.sub(r"^\s*AS\s", "", rest, flags=re.I).strip()
            out.append((m.group(1).lower(), m.group(2), query, options))
    return out


def skip_parens(text: str, start: int) -> int:
    depth, quoted = 0, False
    for i in range(start, len(text)):
        c = text[i]
        if c == "'":
            quoted = not quoted
        elif not quoted and c == "(":
            depth += 1
        elif not quoted and c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError("unbalanced parentheses")


def split(text: str) -> list[str]:
    out, current, quoted = [], [], False
    for c in text:
        if c == "'":
            quoted = not quoted
        if c == ";" and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(c)
    if "".join(current).strip():
        out.append("".join(current))
    return out


def rewrite(sql: str, peer: str) -> str:
    for pattern, replacement in REWRITES[peer]:
        sql = re.sub(pattern, replacement, sql)
    return sql


def rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> None:
    """Resets VmHWM (Linux: writing 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---- Tributary ---------------------------------------------------------------------------

class Tributary:
    name = "tributary"

    def __init__(self, binary: Path, work: Path, data: Path) -> None:
        import psycopg
        self.work, self.data = work, data
        self.server = TributaryServer(binary, work, log_name="tributary.log")
        self.port = self.server.port
        self.conn = psycopg.connect(self.server.dsn(), autocommit=True)

    def run(self, sql: str) -> None:
        self.conn.execute(sql)

    def load(self) -> None:
        self.run("CREATE SCHEMA raw; CREATE SCHEMA staging; CREATE SCHEMA intermediate; "
                 "CREATE SCHEMA marts; CREATE SCHEMA reports")
        for name, (columns, path, fmt) in RAW.items():
            if name == "raw.bank_transactions":
                # A table, so the updates of the incremental phase reach models as changes.
                self.run(f"CREATE TABLE {name} ({columns})")
                self.run(f"COPY {name} FROM '{self.data / path}' WITH (FORMAT csv, HEADER true)")
            elif path is None:
                self.run(f"CREATE TABLE {name} ({columns})")
            elif fmt == "json":
                self.run(f"CREATE SOURCE {name} ({columns}) FROM FILES '{self.data / path}' "
                         "FORMAT JSON")
            else:
                where = self.data / path
                target = f"{where}/" if fmt == "csvdir" else str(where)
                self.run(f"CREATE SOURCE {name} ({columns}) FROM FILES '{target}' FORMAT CSV")

    def build(self, dag) -> None:
        for kind, name, query, options in dag:
            self.run(f"CREATE {kind.upper()} {name} {options}AS {query}")
        self.build_runs = self.conn.execute(
            "SELECT model, duration_ms, rows_written FROM tributary.runs ORDER BY run_id").fetchall()

    def change(self, new_file: Path, updated_ids: list[int]) -> None:
        shutil.copy(new_file, self.data / "transactions" / new_file.name)
        self.run(update_sql(updated_ids))

    def refresh(self, dag) -> None:
        last = self.conn.execute("SELECT coalesce(max(run_id), 0) FROM tributary.runs").fetchone()[0]
        self.run("REFRESH ALL")
        self.runs = self.conn.execute(
            "SELECT model, strategy, duration_ms, rows_read, rows_written, reason "
            f"FROM tributary.runs WHERE run_id > {last} ORDER BY run_id").fetchall()

    def pid(self) -> int:
        return self.server.pid

    def stop(self) -> None:
        self.conn.close()
        self.server.stop()
        # The peers load the history folder as it was before the change step.
        (self.data / "transactions" / NEW_FILE).unlink(missing_ok=True)


def update_sql(ids: list[int]) -> str:
    return (f"UPDATE raw.bank_transactions SET amount = amount + 1, status = 'booked' "
            f"WHERE transaction_id IN ({','.join(map(str, ids))})")


# ---- DuckDB ------------------------------------------------------------------------------

class DuckDB:
    """DuckDB in a child process (so its peak memory is its own), driven over a pipe."""
    name = "duckdb"

    def __init__(self, work: Path, data: Path) -> None:
        self.data = data
        code = ("import duckdb, sys\n"
                f"c = duckdb.connect({str(work / 'duck.db')!r})\n"
                # The progress bar of long statements would land on the answer pipe.
                "c.execute('SET enable_progress_bar = false')\n"
                "for line in sys.stdin:\n"
                "    c.execute(line.replace('\\x1f', '\\n')); print('ok', flush=True)\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, sql: str) -> None:
        self.proc.stdin.write(sql.replace("\n", "\x1f") + "\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ok":
            sys.exit(f"duckdb failed on: {sql[:200]}")

    def load(self) -> None:
        for schema in ["raw", "staging", "intermediate", "marts", "reports"]:
            self.run(f"CREATE SCHEMA {schema}")
        for name, (columns, path, fmt) in RAW.items():
            self.run(f"CREATE TABLE {name} ({columns})")
            if path is None:
                continue
            where = self.data / path
            if fmt == "json":
                self.run(f"INSERT INTO {name} SELECT * FROM read_json('{where}')")
            else:
                files = f"{where}/*.csv" if fmt == "csvdir" else str(where)
                self.run(f"INSERT INTO {name} SELECT * FROM read_csv('{files}', header = true, "
                         f"all_varchar = true)")

    def build(self, dag) -> None:
        for kind, name, query, _ in dag:
            self.run(f"CREATE OR REPLACE {'VIEW' if kind == 'view' else 'TABLE'} {name} AS "
                     f"{rewrite(query, 'duckdb')}")

    def change(self, new_file: Path, updated_ids: list[int]) -> None:
        self.run(f"INSERT INTO raw.transaction_history SELECT * FROM read_csv('{new_file}', "
                 "header = true, all_varchar = true)")
        self.run(update_sql(updated_ids))

    refresh = build

    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ---- PostgreSQL --------------------------------------------------------------------------

class Postgres:
    name = "postgres"

    def __init__(self, dsn: str, data: Path) -> None:
        import psycopg
        self.data = data
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("DROP SCHEMA IF EXISTS raw, staging, intermediate, marts, reports CASCADE")
        self.backend = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def run(self, sql: str) -> None:
        self.conn.execute(sql)

    def load(self) -> None:
        import json
        for schema in ["raw", "staging", "intermediate", "marts", "reports"]:
            self.run(f"CREATE SCHEMA {schema}")
        for name, (columns, path, fmt) in RAW.items():
            self.run(f"CREATE UNLOGGED TABLE {name} ({columns})")
            if path is None:
                continue
            where = self.data / path
            files = sorted(where.glob("*.csv")) if fmt == "csvdir" else [where]
            with self.conn.cursor() as cur:
                for file in files:
                    if fmt == "json":
                        rows = json.loads(file.read_text())
                        with cur.copy(f"COPY {name} FROM STDIN") as copy:
                            for r in rows:
                                copy.write_row(list(r.values()))
                        continue
                    with cur.copy(f"COPY {name} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                        with open(file, "rb") as f:
                            while chunk := f.read(1 << 20):
                                copy.write(chunk)
        self.run("ANALYZE")

    def build(self, dag) -> None:
        for kind, name, query, _ in dag:
            self.run(f"DROP {'VIEW' if kind == 'view' else 'TABLE'} IF EXISTS {name} CASCADE")
            self.run(f"CREATE {'VIEW' if kind == 'view' else 'UNLOGGED TABLE'} {name} AS "
                     f"{rewrite(query, 'postgres')}")

    def change(self, new_file: Path, updated_ids: list[int]) -> None:
        with self.conn.cursor() as cur:
            with cur.copy("COPY raw.transaction_history FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                copy.write(new_file.read_bytes())
        self.run(update_sql(updated_ids))

    refresh = build

    def pid(self) -> int:
        return self.backend

    def stop(self) -> None:
        self.conn.close()


# ---- the run -----------------------------------------------------------------------------

def changes(data: Path, work: Path, fraction_new: float, fraction_updated: float, seed: int):
    """A new history file with `fraction_new` of the history's rows (copies of the newest,
    renumbered), and the ids of `fraction_updated` of the bank's transactions."""
    rng = random.Random(seed)
    history = sorted((data / "transactions").glob("*.csv"))
    total = sum(sum(1 for _ in open(f)) - 1 for f in history)
    last = history[-1].read_text().splitlines()
    header, rows = last[0], last[1:]
    first_id = 10**11
    new = work / NEW_FILE
    with open(new, "w") as f:
        f.write(header + "\n")
        for i in range(int(total * fraction_new)):
            fields = rows[i % len(rows)].split(",")
            fields[0] = str(first_id + i)
            f.write(",".join(fields) + "\n")
    bank = (data / "bank" / "transactions.csv").read_text().splitlines()[1:]
    ids = [int(l.split(",")[0]) for l in bank]
    updated = rng.sample(ids, max(1, int(len(ids) * fraction_updated)))
    return new, updated, total


def serving(port: int, dsn: str, queries: int, seed: int) -> dict:
    import psycopg
    rng = random.Random(seed)
    conn = psycopg.connect(dsn, autocommit=True)
    ids = [r[0] for r in conn.execute(
        "SELECT transaction_id FROM marts.fct_transactions LIMIT 10000").fetchall()]
    units = ["retail", "corporate", "wealth", "treasury"]
    latencies = []
    for i in range(queries):
        start = time.perf_counter()
        if i % 2 == 0:
            conn.execute("SELECT * FROM marts.fct_transactions WHERE transaction_id = %s",
                         (rng.choice(ids),)).fetchall()
        else:
            day = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(900))
            conn.execute("SELECT day, revenue, expenses, net_cash_flow FROM marts.kpi_daily "
                         "WHERE business_unit = %s AND day BETWEEN %s AND %s ORDER BY day",
                         (rng.choice(units), day, day + dt.timedelta(days=30))).fetchall()
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    conn.close()
    return {"p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)]}


def bulk(host_args: list[str], dsn: str, rows: int, env: dict) -> dict:
    import psycopg
    sql = f"SELECT * FROM marts.fct_transactions LIMIT {rows}"
    with open(os.devnull, "wb") as null:
        psql = timed(lambda: subprocess.run(
            ["psql", "-X", "-q", *host_args, "-c", f"COPY ({sql}) TO STDOUT"],
            stdout=null, check=True, env=env))
    conn = psycopg.connect(dsn, autocommit=True)

    def fetch():
        with conn.cursor(name=None) as cur:
            cur.execute(sql)
            while cur.fetchmany(10000):
                pass
    driver = timed(fetch)
    count = conn.execute(f"SELECT count(*) FROM ({sql}) AS r").fetchone()[0]
    conn.close()
    return {"psql_copy_s": psql, "psycopg_s": driver, "bulk_rows": count}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--transactions", type=int, default=1_000_000)
    ap.add_argument("--binary", type=Path, default=default_binary())
    ap.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres dbname=test")
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--bulk-rows", type=int, default=5_000_000)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--skip", action="append", default=[], choices=["duckdb", "postgres"])
    args = ap.parse_args()
    require_binary(args.binary)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tributary-finance-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"data-{args.transactions}"
    if not data.exists():
        subprocess.run([str(args.binary), "generate", "--out", str(data), "--transactions",
                        str(args.transactions)], check=True)
    # A rerun in the same workdir starts afresh: no warehouse or DuckDB file of the last run,
    # and the history without the file the last run's change step added to it.
    shutil.rmtree(work / "warehouse", ignore_errors=True)
    for stale in [work / "duck.db", work / "duck.db.wal", data / "transactions" / NEW_FILE]:
        stale.unlink(missing_ok=True)
    dag = models(REPO_DIR / "models")
    new_file, updated, history_rows = changes(data, work, 0.01, 0.001, 7)
    print(f"{args.transactions} transactions ({history_rows} in the history files), "
          f"{len(dag)} models and views; workdir {work}")

    results = {}
    systems = [("tributary", lambda: Tributary(args.binary, work, data))]
    if "duckdb" not in args.skip:
        systems.append(("duckdb", lambda: DuckDB(work, data)))
    if "postgres" not in args.skip:
        systems.append(("postgres", lambda: Postgres(args.pg, data)))
    trib_port = None
    for name, make in systems:
        system = make()
        r = results[name] = {}
        r["load_s"] = timed(system.load)
        reset_peak(system.pid())
        r["build_s"] = timed(lambda: system.build(dag))
        r["build_peak_mib"] = rss_peak_kib(system.pid()) / 1024
        system.change(new_file, updated)
        reset_peak(system.pid())
        r["refresh_s"] = timed(lambda: system.refresh(dag))
        r["refresh_peak_mib"] = rss_peak_kib(system.pid()) / 1024
        print(name, {k: round(v, 3) for k, v in r.items()}, flush=True)
        if name == "tributary":
            r["runs"] = system.runs
            r["build_runs"] = system.build_runs
            trib_port = system.port
            dsn = f"host=127.0.0.1 port={trib_port} user=tributary dbname=tributary"
            r.update(serving(trib_port, dsn, args.queries, 1))
            env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
            r.update(bulk(["-h", "127.0.0.1", "-p", str(trib_port), "-U", "tributary",
                           "tributary"], dsn, args.bulk_rows, env))
        if name == "postgres":
            # What a PostgreSQL user serving these queries would have (not timed).
            system.run("CREATE INDEX ON marts.fct_transactions (transaction_id); "
                       "CREATE INDEX ON marts.kpi_daily (business_unit, day); "
                       "ANALYZE marts.fct_transactions, marts.kpi_daily")
            r.update(serving(0, args.pg, args.queries, 1))
            params = dict(p.split("=") for p in args.pg.split())
            r.update(bulk(["-h", params.get("host", "127.0.0.1"), "-p", params.get("port", "5432"),
                           "-U", params.get("user", "postgres"), params.get("dbname", "test")],
                          args.pg, args.bulk_rows, dict(os.environ)))
        system.stop()

    report = render(args, results)
    print(report)
    out = result_path(f"finance-{args.transactions}")
    out.write_text(report)
    print(f"written to {out}")


def peer_versions(args, results: dict) -> str:
    """The peers' versions: their speed changes between releases as much as between machines."""
    versions = []
    if "duckdb" in results:
        import duckdb
        versions.append(f"DuckDB {duckdb.__version__}")
    if "postgres" in results:
        import psycopg
        with psycopg.connect(args.pg) as conn:
            versions.append(f"PostgreSQL {conn.execute('SHOW server_version').fetchone()[0]}")
    return ", ".join(versions) or "none"


def render(args, results: dict) -> str:
    lines = [f"# Financial pipeline, {args.transactions:,} transactions ({dt.date.today()})", "",
             f"Machine: {machine_line()}; binary {args.binary}, source {source_commit()}",
             "", f"Peers: {peer_versions(args, results)}", "",
             "| system | load (s) | build (s) | build peak (MiB) | after changes (s) | peak (MiB) |",
             "|---|--:|--:|--:|--:|--:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['load_s']:.2f} | {r['build_s']:.2f} | "
                     f"{r['build_peak_mib']:.0f} | {r['refresh_s']:.2f} | "
                     f"{r['refresh_peak_mib']:.0f} |")
    t = results["tributary"]
    lines.append("")
    for peer in ("duckdb", "postgres"):
        if peer in results:
            p = results[peer]
            lines.append(f"- build: Tributary / {peer} = {t['build_s'] / p['build_s']:.2f}x time "
                         f"({(t['load_s'] + t['build_s']) / (p['load_s'] + p['build_s']):.2f}x "
                         f"counting the load, since Tributary reads its files during the build), "
                         f"{t['build_peak_mib'] / max(p['build_peak_mib'], 1):.2f}x memory; "
                         f"{peer} rebuild / Tributary incremental = "
                         f"{p['refresh_s'] / t['refresh_s']:.1f}x")
    if "postgres" in results:
        p = results["postgres"]
        lines.append(f"- serving p50/p99 over {args.queries:,} queries: Tributary "
                     f"{t['p50_ms']:.2f}/{t['p99_ms']:.2f} ms, PostgreSQL "
                     f"{p['p50_ms']:.2f}/{p['p99_ms']:.2f} ms (PostgreSQL with indexes on "
                     f"fct_transactions.transaction_id and kpi_daily (business_unit, day); "
                     f"Tributary prunes Delta files by their statistics)")
        lines.append(f"- {t['bulk_rows']:,}-row result (SELECT * FROM marts.fct_transactions): "
                     f"psql COPY Tributary {t['psql_copy_s']:.2f} s vs PostgreSQL "
                     f"{p['psql_copy_s']:.2f} s; psycopg {t['psycopg_s']:.2f} s vs "
                     f"{p['psycopg_s']:.2f} s")
    lines += ["", "Tributary's full builds (`tributary.runs` of the CREATE MODEL statements):", "",
              "| model | time (s) | rows written |", "|---|--:|--:|"]
    for model, ms, written in t.get("build_runs", []):
        lines.append(f"| {model} | {(ms or 0) / 1000:.3f} | {written or 0:,} |")
    lines += ["", "Tributary's refreshes after the changes (`tributary.runs`, in the order REFRESH ALL "
              "ran them):", "",
              "| model | strategy | time (s) | rows read | rows written | reason |",
              "|---|---|--:|--:|--:|---|"]
    for model, strategy, ms, read, written, reason in t.get("runs", []):
        reason = (reason or "").replace("|", "\\|")
        lines.append(f"| {model} | {strategy} | {(ms or 0) / 1000:.3f} | {read or 0:,} | "
                     f"{written or 0:,} | {reason} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
