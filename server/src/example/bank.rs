//! The transactional bank the example federates: a `bank` database on a PostgreSQL server,
//! loaded once from `seeds/bank/` and then kept busy (new pending transactions, pending ones
//! booked) so the project's cursor-tracked source sees inserts and updates.

use std::time::Duration;

use futures::SinkExt;
use rand::Rng;
use tokio_postgres::{Client, NoTls};

/// What a write sets `updated_at` to: the clock, or just after the newest cursor when that is
/// ahead of the clock (the seeds' last day runs to 23:59:59). The source's cursor tracking
/// relies on cursors only moving forward, as a real bank's do.
const NEXT_CURSOR: &str = "greatest(clock_timestamp(), \
     (SELECT max(updated_at) FROM bank.transactions) + interval '1 millisecond')";

/// A connection to the loaded bank database.
pub(crate) struct Bank {
    client: Client,
    accounts: i64,
    transactions: i64,
}

impl Bank {
    pub(crate) fn summary(&self) -> String {
        format!(
            "database bank: {} accounts, {} transactions",
            self.accounts, self.transactions
        )
    }

    /// One tick of activity: a few new pending transactions, and some pending ones booked.
    pub(crate) async fn tick(&self, rng: &mut impl Rng) -> Result<(), tokio_postgres::Error> {
        let new = rng.random_range(1..=4);
        for _ in 0..new {
            let account: i32 = rng.random_range(1..=12);
            let counterparty: i32 = rng.random_range(1..=60);
            let revenue = rng.random_bool(0.45);
            let gl: i32 = if revenue {
                4000 + 100 * rng.random_range(0..3)
            } else {
                5000 + 100 * rng.random_range(0..7)
            };
            let magnitude: f64 = rng.random_range(50.0..4000.0);
            let amount = if revenue { magnitude } else { -magnitude };
            self.client
                .execute(
                    &format!("INSERT INTO bank.transactions (transaction_id, account_id, counterparty_id, \
                     gl_code, booked_at, value_date, amount, currency, description, status, updated_at) \
                     SELECT (SELECT coalesce(max(transaction_id), 0) + 1 FROM bank.transactions), \
                            $1, $2, $3, now(), current_date, round($4::text::numeric, 2), \
                            a.currency, 'live', 'pending', {NEXT_CURSOR} \
                     FROM bank.accounts a WHERE a.account_id = $1"),
                    &[&account, &counterparty, &gl, &amount.to_string()],
                )
                .await?;
        }
        self.client
            .execute(
                &format!(
                    "UPDATE bank.transactions SET status = 'booked', updated_at = {NEXT_CURSOR} \
                 WHERE transaction_id IN (SELECT transaction_id FROM bank.transactions \
                 WHERE status = 'pending' ORDER BY transaction_id LIMIT 3)"
                ),
                &[],
            )
            .await?;
        Ok(())
    }
}

/// Creates (once) and loads the bank database on the server at `maintenance_url`.
pub(crate) async fn load(maintenance_url: &str) -> Result<Bank, String> {
    let admin = connect(maintenance_url).await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = 'bank'", &[])
        .await
        .map_err(|e| e.to_string())?
        .is_some();
    if !exists {
        admin
            .batch_execute("CREATE DATABASE bank")
            .await
            .map_err(|e| format!("cannot create database bank: {e}"))?;
    }
    let mut config: tokio_postgres::Config = maintenance_url.parse().map_err(|e| format!("{e}"))?;
    config.dbname("bank");
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), config.connect(NoTls))
        .await
        .map_err(|_| "timed out connecting to database bank".to_string())?
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    client
        .batch_execute(include_str!("bank_schema.sql"))
        .await
        .map_err(|e| format!("cannot create the bank's tables: {e}"))?;
    // Loaded once per version of the seeds: live activity accumulates across restarts, and
    // regenerated seeds replace it.
    let accounts = read(ACCOUNTS)?;
    let transactions = read(TRANSACTIONS)?;
    let fingerprint = format!("{:016x}", fnv1a(&[&accounts, &transactions]));
    let loaded: Option<String> = client
        .query_opt("SELECT fingerprint FROM bank.seed", &[])
        .await
        .map_err(|e| e.to_string())?
        .map(|r| r.get(0));
    if loaded.as_deref() != Some(fingerprint.as_str()) {
        client
            .batch_execute("TRUNCATE bank.transactions, bank.accounts, bank.seed")
            .await
            .map_err(|e| e.to_string())?;
        copy_in(&client, "bank.accounts", accounts).await?;
        copy_in(&client, "bank.transactions", transactions).await?;
        client
            .execute("INSERT INTO bank.seed VALUES ($1)", &[&fingerprint])
            .await
            .map_err(|e| e.to_string())?;
    }
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM bank.accounts), (SELECT count(*) FROM bank.transactions)",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(Bank {
        client,
        accounts: row.get(0),
        transactions: row.get(1),
    })
}

async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) =
        tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(url, NoTls))
            .await
            .map_err(|_| format!("timed out connecting to {}", redact(url)))?
            .map_err(|e| format!("cannot connect to {}: {e}", redact(url)))?;
    tokio::spawn(connection);
    Ok(client)
}

/// A connection URL without its password, for messages.
fn redact(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => format!(
            "{}@{:?}/{}",
            c.get_user().unwrap_or("?"),
            c.get_hosts(),
            c.get_dbname().unwrap_or("?")
        ),
        Err(_) => "the bank server".into(),
    }
}

const ACCOUNTS: &str = "seeds/bank/accounts.csv";
const TRANSACTIONS: &str = "seeds/bank/transactions.csv";

fn read(file: &str) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))
}

/// FNV-1a over the seed files: a stable fingerprint (std's hasher may change between releases).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

async fn copy_in(client: &Client, table: &str, data: Vec<u8>) -> Result<(), String> {
    let sink = client
        .copy_in(&format!(
            "COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)"
        ))
        .await
        .map_err(|e| format!("loading {table}: {e}"))?;
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data))
        .await
        .map_err(|e| format!("loading {table}: {e}"))?;
    sink.finish()
        .await
        .map_err(|e| format!("loading {table}: {e}"))?;
    Ok(())
}
