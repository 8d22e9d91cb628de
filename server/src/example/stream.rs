//! The example's live activity: card payments landing as files, and bank bookings.
//!
//! Each batch of card payments is written beside the landing folder and renamed into it, so
//! the append-mode file source never sees a half-written file. Some payments arrive late
//! (authorized hours or days before they land) and some are sent twice, as card networks do;
//! the staging model deduplicates them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::bank::Bank;
use super::generate::{self, CARD_HEADER};

/// Creates the landing folder and, when it is empty, lands the generated card history first.
pub(crate) fn prepare_landing(landing: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot prepare {}: {e}", landing.display());
    std::fs::create_dir_all(landing).map_err(fail)?;
    if std::fs::read_dir(landing).map_err(fail)?.next().is_none() {
        std::fs::copy(
            "seeds/card_payments/history.csv",
            landing.join("0000-history.csv"),
        )
        .map_err(fail)?;
    }
    Ok(())
}

/// Runs the activity loop in the background, one batch every `tick`.
pub(crate) fn start(landing: PathBuf, bank: Option<Bank>, tick: Duration) {
    tokio::spawn(async move {
        let seed = Utc::now().timestamp_micros() as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let accounts = generate::card_accounts(42);
        let mut next_id = generate::CARD_ID_BASE * 2 + seed % 1_000_000_000 * 1000;
        let mut last_row: Option<String> = None;
        let mut interval = tokio::time::interval(tick);
        interval.tick().await;
        loop {
            interval.tick().await;
            let mut batch = String::from(CARD_HEADER);
            batch.push('\n');
            for _ in 0..rng.random_range(1..=8) {
                let (account, currency) = accounts[rng.random_range(0..accounts.len())];
                let late = if rng.random_bool(0.1) {
                    chrono::TimeDelta::minutes(rng.random_range(60..72 * 60))
                } else {
                    chrono::TimeDelta::zero()
                };
                let at = Utc::now().naive_utc() - late;
                next_id += 1;
                batch.push_str(&generate::card_row(
                    &mut rng, next_id, account, currency, at,
                ));
            }
            if let Some(row) = last_row.take().filter(|_| rng.random_bool(0.05)) {
                batch.push_str(&row);
            }
            last_row = batch.lines().nth(1).map(|l| format!("{l}\n"));
            if let Err(e) = land(&landing, &batch) {
                tracing::warn!(error = %e, "demo: could not land card payments");
            }
            if let Some(bank) = &bank
                && let Err(e) = bank.tick(&mut rng).await
            {
                tracing::warn!(error = %e, "demo: bank activity failed");
            }
        }
    });
}

/// Writes one batch beside the folder and renames it in: the file appears whole or not at all.
fn land(landing: &Path, batch: &str) -> std::io::Result<()> {
    let name = format!("{}.csv", Utc::now().format("%Y%m%dT%H%M%S%.3f"));
    let staging = landing
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!(".{name}.partial"));
    std::fs::write(&staging, batch)?;
    std::fs::rename(&staging, landing.join(name))
}
