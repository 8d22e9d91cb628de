use super::*;

#[test]
fn spread_adds_up_and_follows_the_week() {
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(); // a Monday
    let end = start + Duration::days(13);
    let counts = spread(10_000, start, end);
    assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), 10_000);
    let monday = counts[0].1;
    let sunday = counts[6].1;
    assert!(monday > 4 * sunday, "{counts:?}");
}

#[test]
fn the_same_seed_gives_the_same_rows() {
    let dir = std::env::temp_dir().join(format!("tributary-gen-{}", std::process::id()));
    let args = |out: PathBuf| GenerateArgs {
        out,
        transactions: 3_000,
        seed: 7,
        end: NaiveDate::from_ymd_opt(2026, 6, 30).unwrap(),
    };
    let a = run(&args(dir.join("a"))).unwrap();
    run(&args(dir.join("b"))).unwrap();
    assert!(a.bank_rows + a.history_rows + a.card_rows >= 3_000);
    for file in [
        "bank/transactions.csv",
        "transactions/2024-01.csv",
        "fx_rates.json",
    ] {
        assert_eq!(
            fs::read(dir.join("a").join(file)).unwrap(),
            fs::read(dir.join("b").join(file)).unwrap(),
            "{file}"
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}
