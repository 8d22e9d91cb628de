//! `tributary generate`: the example project's data at any scale, deterministic by seed.
//!
//! One run writes every input the financial models read: reference data (chart of accounts,
//! bank accounts, counterparties), three years of daily FX rates and market prices, the
//! transaction history as monthly CSV files, the transactional bank's last 90 days (what
//! `tributary demo` loads into PostgreSQL) and a first batch of card payments (the stream's
//! history). The committed `seeds/` folder is exactly `tributary generate --out seeds` with the
//! defaults, which a test checks, so the seeds and the generator never drift apart.
//!
//! The data is messy the way real feeds are: duplicated rows (the same transaction in two
//! monthly files, a card payment sent twice), late rows, missing counterparties and
//! descriptions, bad rows (unparseable amounts and dates) and currency codes in mixed case and
//! padding. Spend has weekly seasonality, growth and the occasional spike, so the KPIs,
//! deviation alerts and forecast built on it have something to find.
//!
//! ChaCha8 is the random generator because its output is fixed by its specification, not by a
//! crate version: the same seed gives the same bytes on every machine and release.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Args, Debug, Clone)]
pub(crate) struct GenerateArgs {
    /// Output folder (created if missing; generated files are overwritten).
    #[arg(long, default_value = "seeds")]
    pub out: PathBuf,
    /// Transactions to generate over the three years (history, bank and card payments).
    #[arg(long, default_value_t = 20_000)]
    pub transactions: u64,
    /// Random seed: the same seed and options give byte-identical files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Last day of the generated history (YYYY-MM-DD).
    #[arg(long, default_value = "2026-11-30")]
    pub end: NaiveDate,
}

/// Days of history; the bank holds the last [`BANK_DAYS`] of them, the CSV history the rest.
const HISTORY_DAYS: i64 = 3 * 365 + 1;
pub(crate) const BANK_DAYS: i64 = 90;
/// Share of all transactions that are card payments (the stream), in per mille.
const CARD_PER_MILLE: u64 = 60;

pub(crate) const CURRENCIES: [(&str, f64); 5] = [
    ("USD", 1.0),
    ("EUR", 1.08),
    ("GBP", 1.27),
    ("CHF", 1.12),
    ("JPY", 0.0067),
];

/// (gl_code, name, type, category, typical absolute amount in USD)
const CHART: [(u32, &str, &str, &str, f64); 11] = [
    (4000, "Product sales", "revenue", "sales", 2_400.0),
    (4100, "Service fees", "revenue", "fees", 650.0),
    (4200, "Interest income", "revenue", "interest", 900.0),
    (5000, "Salaries", "expense", "payroll", 3_800.0),
    (
        5100,
        "Rent and facilities",
        "expense",
        "facilities",
        2_900.0,
    ),
    (5200, "Marketing", "expense", "marketing", 1_200.0),
    (5300, "Software and cloud", "expense", "technology", 800.0),
    (5400, "Travel", "expense", "travel", 450.0),
    (5500, "Suppliers", "expense", "cost_of_sales", 1_700.0),
    (5600, "Taxes", "expense", "taxes", 2_100.0),
    (5700, "Card spending", "expense", "card", 85.0),
];

/// The first entries of [`CHART`] are revenue, the rest expenses (the last one card spending,
/// which only card payments use).
const REVENUE_LINES: usize = 3;

const UNITS: [&str; 4] = ["retail", "corporate", "wealth", "treasury"];
const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "GB", "CH", "JP", "NL", "ES"];
const NAME_A: [&str; 12] = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Wonka",
    "Vandelay",
];
const NAME_B: [&str; 8] = [
    "Industries",
    "Holdings",
    "Logistics",
    "Partners",
    "Systems",
    "Foods",
    "Capital",
    "Retail",
];
const MERCHANTS: [&str; 10] = [
    "Coffee Corner",
    "City Taxi",
    "Air Lines",
    "Book Nook",
    "Cloud Store",
    "Hotel Central",
    "Office Depot",
    "Fuel Stop",
    "Rail Co",
    "Lunch Box",
];
const TICKERS: [(&str, f64); 5] = [
    ("ACME", 120.0),
    ("GLBX", 48.0),
    ("INIT", 15.5),
    ("HOOL", 310.0),
    ("STRK", 78.0),
];

struct Account {
    id: u32,
    unit: &'static str,
    currency: &'static str,
    kind: &'static str,
}

/// What one run wrote, for the command's summary line.
#[derive(Debug, Default)]
pub(crate) struct Generated {
    pub history_rows: u64,
    pub bank_rows: u64,
    pub card_rows: u64,
    pub files: usize,
}

pub(crate) fn run(args: &GenerateArgs) -> Result<Generated, String> {
    generate(args).map_err(|e| format!("generating into {}: {e}", args.out.display()))
}

fn generate(args: &GenerateArgs) -> std::io::Result<Generated> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let start = args.end - Duration::days(HISTORY_DAYS - 1);
    let bank_from = args.end - Duration::days(BANK_DAYS - 1);
    let out = &args.out;
    for dir in ["transactions", "bank", "card_payments"] {
        fs::create_dir_all(out.join(dir))?;
    }
    let mut generated = Generated::default();

    let accounts = accounts(&mut rng);
    write_file(&out.join("accounts.csv"), &mut generated, |w| {
        writeln!(w, "account_id,name,business_unit,currency,kind,opened_on")?;
        for a in &accounts {
            let opened = start - Duration::days(rng.random_range(30..2000));
            let name = format!("{} {} {}", capitalize(a.unit), a.kind, a.currency);
            writeln!(
                w,
                "{},{name},{},{},{},{opened}",
                a.id, a.unit, a.currency, a.kind
            )?;
        }
        Ok(())
    })?;
    write_file(&out.join("chart_of_accounts.csv"), &mut generated, |w| {
        writeln!(w, "gl_code,gl_name,gl_type,category")?;
        for (code, name, kind, category, _) in CHART {
            writeln!(w, "{code},{name},{kind},{category}")?;
        }
        Ok(())
    })?;
    let counterparties = 60 + (args.transactions / 500).min(5_000) as u32;
    write_file(&out.join("counterparties.csv"), &mut generated, |w| {
        writeln!(w, "counterparty_id,name,country,kind")?;
        for id in 1..=counterparties {
            let name = format!(
                "{} {} {id}",
                NAME_A[rng.random_range(0..NAME_A.len())],
                NAME_B[rng.random_range(0..NAME_B.len())]
            );
            // A few counterparties have no known country.
            let country = if rng.random_bool(0.05) {
                ""
            } else {
                COUNTRIES[rng.random_range(0..COUNTRIES.len())]
            };
            let kind = match rng.random_range(0..10) {
                0..=4 => "customer",
                5..=8 => "supplier",
                _ => "employee",
            };
            writeln!(w, "{id},{name},{country},{kind}")?;
        }
        Ok(())
    })?;

    let fx = fx_history(&mut rng, start, args.end);
    write_file(&out.join("fx_rates.json"), &mut generated, |w| {
        writeln!(w, "[")?;
        let last = fx.len() - 1;
        for (i, (day, currency, rate)) in fx.iter().enumerate() {
            let comma = if i == last { "" } else { "," };
            writeln!(
                w,
                "{{\"day\": \"{day}\", \"currency\": \"{currency}\", \"rate_to_usd\": {rate:.6}}}{comma}"
            )?;
        }
        writeln!(w, "]")
    })?;
    write_file(&out.join("market_prices.csv"), &mut generated, |w| {
        writeln!(w, "day,ticker,close,volume")?;
        let mut prices: Vec<f64> = TICKERS.iter().map(|t| t.1).collect();
        for day in days(start, args.end).filter(|d| is_weekday(*d)) {
            for (i, (ticker, _)) in TICKERS.iter().enumerate() {
                prices[i] *= 1.0 + 0.00025 + 0.018 * normal(&mut rng);
                let volume = rng.random_range(50_000..2_000_000);
                writeln!(w, "{day},{ticker},{:.2},{volume}", prices[i])?;
            }
        }
        Ok(())
    })?;

    // Transactions: per-day counts follow weekly seasonality and growth; the card share goes
    // to the stream's first batch, the last 90 days to the bank, the rest to monthly files.
    let card_total = args.transactions * CARD_PER_MILLE / 1000;
    let ledger_total = args.transactions - card_total;
    let ledger_per_day = spread(ledger_total, start, args.end);
    let rate = |day: NaiveDate, currency: &str| -> f64 {
        let i = (day - start).num_days() as usize * CURRENCIES.len();
        #[allow(clippy::unwrap_used, reason = "accounts use listed currencies")]
        let k = CURRENCIES.iter().position(|c| c.0 == currency).unwrap();
        fx[i + k].2
    };
    let spikes = spike_days(&mut rng, start, args.end);
    let end_of_data = (args.end + Duration::days(1)).and_time(chrono::NaiveTime::MIN);
    let end_of_data = end_of_data - Duration::seconds(1);
    let mut next_id = 1u64;
    let mut month_file: Option<(u32, BufWriter<fs::File>)> = None;
    let mut bank = BufWriter::new(fs::File::create(out.join("bank/transactions.csv"))?);
    generated.files += 1;
    writeln!(
        bank,
        "transaction_id,account_id,counterparty_id,gl_code,booked_at,value_date,amount,currency,description,status,updated_at"
    )?;
    let mut previous_row: Option<String> = None;
    for (day, count) in &ledger_per_day {
        let in_bank = *day >= bank_from;
        let month = day.year() as u32 * 100 + day.month();
        if !in_bank && month_file.as_ref().is_none_or(|(m, _)| *m != month) {
            if let Some((_, mut w)) = month_file.take() {
                w.flush()?;
            }
            let path = out.join(format!(
                "transactions/{:04}-{:02}.csv",
                day.year(),
                day.month()
            ));
            let mut w = BufWriter::new(fs::File::create(path)?);
            generated.files += 1;
            writeln!(
                w,
                "transaction_id,account_id,counterparty_id,gl_code,booked_at,value_date,amount,currency,description"
            )?;
            // A duplicate across files: last month's final row delivered again.
            if let Some(row) = previous_row.take() {
                w.write_all(row.as_bytes())?;
                generated.history_rows += 1;
            }
            month_file = Some((month, w));
        }
        for _ in 0..*count {
            let account = &accounts[rng.random_range(0..accounts.len() - 2)];
            // Revenue lines are fewer and smaller than expense lines: picking them 60% of
            // the time makes revenue about 10% above expenses, a business that earns money.
            let (code, _, kind, category, typical) = if rng.random_bool(0.6) {
                CHART[rng.random_range(0..REVENUE_LINES)]
            } else {
                CHART[rng.random_range(REVENUE_LINES..CHART.len() - 1)]
            };
            let spike = if kind == "expense" && spikes.contains(&(*day, category)) {
                6.0
            } else {
                1.0
            };
            let usd = typical * (0.6 * normal(&mut rng)).exp() * spike;
            let sign = if kind == "revenue" { 1.0 } else { -1.0 };
            let amount = sign * usd / rate(*day, account.currency);
            let seconds = rng.random_range(6 * 3600..20 * 3600);
            let booked_at = day.and_time(chrono::NaiveTime::MIN) + Duration::seconds(seconds);
            let value_date = *day + Duration::days(rng.random_range(0..3));
            let counterparty = if rng.random_bool(0.02) {
                String::new()
            } else {
                rng.random_range(1..=counterparties).to_string()
            };
            let description = if rng.random_bool(0.03) {
                String::new()
            } else {
                format!("{category} {}", rng.random_range(1000..9999))
            };
            let mut row = String::with_capacity(120);
            let _ = write!(
                row,
                "{next_id},{},{counterparty},{code},{}Z,{value_date},{},{},{description}",
                account.id,
                booked_at.format("%Y-%m-%dT%H:%M:%S"),
                amount_text(&mut rng, amount, account.currency, !in_bank),
                messy_currency(&mut rng, account.currency),
            );
            next_id += 1;
            if in_bank {
                // Recent rows settle over a few days: pending first, booked later.
                let age = (args.end - *day).num_days();
                let status = if age < 3 && rng.random_bool(0.5) {
                    "pending"
                } else if rng.random_bool(0.004) {
                    "reversed"
                } else {
                    "booked"
                };
                // Settled up to two days later, but never after the end of the data.
                let updated =
                    (booked_at + Duration::hours(rng.random_range(0..48))).min(end_of_data);
                writeln!(
                    bank,
                    "{row},{status},{}Z",
                    updated.format("%Y-%m-%dT%H:%M:%S")
                )?;
                generated.bank_rows += 1;
            } else if let Some((_, w)) = month_file.as_mut() {
                row.push('\n');
                w.write_all(row.as_bytes())?;
                if rng.random_bool(0.004) {
                    w.write_all(row.as_bytes())?;
                    generated.history_rows += 1;
                }
                generated.history_rows += 1;
                previous_row = Some(row);
            }
        }
    }
    if let Some((_, mut w)) = month_file.take() {
        w.flush()?;
    }
    bank.flush()?;

    write_file(&out.join("bank/accounts.csv"), &mut generated, |w| {
        writeln!(
            w,
            "account_id,iban,business_unit,currency,status,updated_at"
        )?;
        for a in &accounts {
            writeln!(
                w,
                "{},XX{:02}TRIB{:012},{},{},open,{}T00:00:00Z",
                a.id,
                a.id % 97,
                a.id as u64 * 7919,
                a.unit,
                a.currency,
                bank_from
            )?;
        }
        Ok(())
    })?;

    let card_accounts: Vec<&Account> = accounts.iter().filter(|a| a.kind == "card").collect();
    let mut card_rows = 0;
    write_file(
        &out.join("card_payments/history.csv"),
        &mut generated,
        |w| {
            writeln!(w, "{CARD_HEADER}")?;
            let mut card_id = CARD_ID_BASE;
            for (day, count) in spread(card_total, start, args.end) {
                for _ in 0..count {
                    let at = day.and_time(chrono::NaiveTime::MIN)
                        + Duration::seconds(rng.random_range(0..86_400));
                    let account = card_accounts[rng.random_range(0..card_accounts.len())];
                    card_id += 1;
                    let row = card_row(&mut rng, card_id, account.id, account.currency, at);
                    w.write_all(row.as_bytes())?;
                    card_rows += 1;
                    if rng.random_bool(0.003) {
                        w.write_all(row.as_bytes())?;
                        card_rows += 1;
                    }
                }
            }
            Ok(())
        },
    )?;
    generated.card_rows = card_rows;
    Ok(generated)
}

/// Card payments are numbered apart from ledger transactions, which the bank keeps numbering.
pub(crate) const CARD_ID_BASE: u64 = 1_000_000_000_000;

pub(crate) const CARD_HEADER: &str = "payment_id,account_id,merchant,amount,currency,authorized_at";

/// One card payment as a CSV line (with its newline).
pub(crate) fn card_row(
    rng: &mut impl Rng,
    id: u64,
    account: u32,
    currency: &str,
    at: chrono::NaiveDateTime,
) -> String {
    let merchant = MERCHANTS[rng.random_range(0..MERCHANTS.len())];
    let amount = -(85.0 * (0.7 * normal(rng)).exp());
    format!(
        "{id},{account},{merchant},{amount:.2},{currency},{}Z\n",
        at.format("%Y-%m-%dT%H:%M:%S")
    )
}

/// The card accounts' ids and currencies, as [`accounts`] generates them for `seed`.
pub(crate) fn card_accounts(seed: u64) -> Vec<(u32, &'static str)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    accounts(&mut rng)
        .into_iter()
        .filter(|a| a.kind == "card")
        .map(|a| (a.id, a.currency))
        .collect()
}

/// Bank accounts: a few per business unit and currency; the last two are card accounts
/// (only card payments use them).
fn accounts(rng: &mut ChaCha8Rng) -> Vec<Account> {
    let mut accounts = Vec::new();
    let mut id = 1;
    for unit in UNITS {
        for kind in ["operating", "payroll", "savings"] {
            let currency = CURRENCIES[rng.random_range(0..3)].0;
            accounts.push(Account {
                id,
                unit,
                currency,
                kind,
            });
            id += 1;
        }
    }
    for (unit, currency) in [("retail", "EUR"), ("corporate", "USD")] {
        accounts.push(Account {
            id,
            unit,
            currency,
            kind: "card",
        });
        id += 1;
    }
    accounts
}

/// Daily rates to USD for every currency (a random walk), in day-then-currency order.
fn fx_history(
    rng: &mut ChaCha8Rng,
    start: NaiveDate,
    end: NaiveDate,
) -> Vec<(NaiveDate, &'static str, f64)> {
    let mut rates: Vec<f64> = CURRENCIES.iter().map(|c| c.1).collect();
    let mut out = Vec::new();
    for day in days(start, end) {
        for (i, (currency, _)) in CURRENCIES.iter().enumerate() {
            if i > 0 {
                rates[i] *= 1.0 + 0.004 * normal(rng);
            }
            out.push((day, *currency, (rates[i] * 1e6).round() / 1e6));
        }
    }
    out
}

/// `total` spread over the days from `start` to `end`: weekends are quiet, and business grows
/// by half over the period. Rounding carries over, so the counts add up to `total` exactly.
fn spread(total: u64, start: NaiveDate, end: NaiveDate) -> Vec<(NaiveDate, u64)> {
    let span = (end - start).num_days().max(1) as f64;
    let weights: Vec<(NaiveDate, f64)> = days(start, end)
        .map(|d| {
            let weekly = match d.weekday() {
                Weekday::Sat => 0.35,
                Weekday::Sun => 0.2,
                Weekday::Mon => 1.15,
                _ => 1.0,
            };
            (
                d,
                weekly * (1.0 + 0.5 * (d - start).num_days() as f64 / span),
            )
        })
        .collect();
    let sum: f64 = weights.iter().map(|w| w.1).sum();
    let mut carry = 0.0;
    let mut given = 0u64;
    let mut out = Vec::with_capacity(weights.len());
    for (i, (day, w)) in weights.iter().enumerate() {
        let count = if i + 1 == weights.len() {
            total - given
        } else {
            let exact = total as f64 * w / sum + carry;
            let n = exact.floor();
            carry = exact - n;
            (n as u64).min(total - given)
        };
        given += count;
        out.push((*day, count));
    }
    out
}

/// Days on which one expense category spends about six times its usual amount.
fn spike_days(
    rng: &mut ChaCha8Rng,
    start: NaiveDate,
    end: NaiveDate,
) -> std::collections::HashSet<(NaiveDate, &'static str)> {
    let mut spikes = std::collections::HashSet::new();
    for day in days(start, end) {
        if rng.random_bool(1.0 / 120.0) {
            let expenses: Vec<&str> = CHART
                .iter()
                .filter(|c| c.2 == "expense")
                .map(|c| c.3)
                .collect();
            spikes.insert((day, expenses[rng.random_range(0..expenses.len())]));
        }
    }
    spikes
}

/// An amount as exported: two decimals (none for yen); `messy` exports (the CSV history) carry
/// the odd unparseable value, the bank's typed column never does.
fn amount_text(rng: &mut ChaCha8Rng, amount: f64, currency: &str, messy: bool) -> String {
    if messy && rng.random_bool(0.0005) {
        return "N/A".into();
    }
    if currency == "JPY" {
        format!("{:.0}", amount)
    } else {
        format!("{amount:.2}")
    }
}

/// A currency code as typed by people: usually clean, sometimes lowercase or padded.
fn messy_currency(rng: &mut ChaCha8Rng, currency: &str) -> String {
    match rng.random_range(0..100) {
        0..=2 => currency.to_lowercase(),
        3 => format!(" {currency}"),
        _ => currency.to_string(),
    }
}

/// A standard normal sample (Box-Muller), so no distribution crate is needed for one formula.
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn days(start: NaiveDate, end: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    start.iter_days().take_while(move |d| *d <= end)
}

fn is_weekday(day: NaiveDate) -> bool {
    !matches!(day.weekday(), Weekday::Sat | Weekday::Sun)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn write_file(
    path: &Path,
    generated: &mut Generated,
    body: impl FnOnce(&mut BufWriter<fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut w = BufWriter::new(fs::File::create(path)?);
    body(&mut w)?;
    w.flush()?;
    generated.files += 1;
    Ok(())
}

#[cfg(test)]
mod tests;
