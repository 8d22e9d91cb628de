use super::*;

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn at(text: &str) -> DateTime<Utc> {
    timestamp(text).unwrap()
}

fn run(trigger: &str, status: RunStatus, started: &str, finished: &str) -> Run {
    Run {
        id: 0,
        object_id: 1,
        object_name: "m.m".into(),
        trigger: trigger.into(),
        strategy: None,
        reason: None,
        status,
        started_at: started.into(),
        finished_at: Some(finished.into()),
        rows_read: None,
        rows_written: None,
        delta_version: None,
        input_versions: None,
        error: (status == RunStatus::Failed).then(|| "boom".to_string()),
        late_rows: None,
    }
}

fn state<'a>(schedule: &'a ModelSchedule, runs: &'a [Run]) -> ModelState<'a> {
    ModelState {
        schedule,
        created_at: at("2026-11-30T00:00:00Z"),
        runs,
        input_changed: false,
    }
}

#[test]
fn schedules_parse() {
    assert_eq!(Schedule::parse("manual").unwrap(), Schedule::Manual);
    assert_eq!(Schedule::parse(" On Change ").unwrap(), Schedule::OnChange);
    assert_eq!(
        Schedule::parse("every 5 minutes").unwrap(),
        Schedule::Every(Duration::from_secs(300))
    );
    assert_eq!(
        Schedule::parse("every hour").unwrap(),
        Schedule::Every(Duration::from_secs(3600))
    );
    assert!(matches!(
        Schedule::parse("cron 0 6 * * *").unwrap(),
        Schedule::Cron(_)
    ));
    let defaults = ModelSchedule::from_options(&BTreeMap::new()).unwrap();
    assert_eq!(defaults.schedule, Schedule::Manual);
    assert_eq!(defaults.retries, 0);
    assert_eq!(defaults.timeout, None);
    let full = ModelSchedule::from_options(&options(&[
        ("schedule", "on change"),
        ("retries", "2"),
        ("retry_delay", "30 seconds"),
        ("timeout", "10 minutes"),
    ]))
    .unwrap();
    assert_eq!(full.retries, 2);
    assert_eq!(full.retry_delay, Duration::from_secs(30));
    assert_eq!(full.timeout, Some(Duration::from_secs(600)));
}

#[test]
fn invalid_values_name_their_option() {
    for (option, value) in [
        ("schedule", "sometimes"),
        ("schedule", "every fortnight-ish"),
        ("schedule", "every 0s"),
        ("schedule", "cron 61 * * * *"),
        ("schedule", "cron 0 6 * *"),
        ("retries", "-1"),
        ("retries", "two"),
        ("retry_delay", "soon"),
        ("timeout", "0"),
        ("timeout", "10 parsecs"),
    ] {
        let e = ModelSchedule::from_options(&options(&[(option, value)])).unwrap_err();
        match e {
            Error::InvalidOption { option: named, .. } => {
                assert_eq!(named, option, "{value}")
            }
            other => panic!("{option} = {value}: {other}"),
        }
    }
}

#[test]
fn manual_is_never_due() {
    let s = ModelSchedule::from_options(&BTreeMap::new()).unwrap();
    let runs = [run(
        "schedule",
        RunStatus::Failed,
        "2026-11-30T00:00:00Z",
        "2026-11-30T00:00:01Z",
    )];
    let mut m = state(&s, &runs);
    m.input_changed = true;
    assert_eq!(due(&m, at("2027-01-01T00:00:00Z")), None);
}

#[test]
fn every_counts_from_the_last_run() {
    let clock = FakeClock::new(at("2026-11-30T00:00:00Z"));
    let s = ModelSchedule::from_options(&options(&[("schedule", "every 5 minutes")])).unwrap();
    let runs = [run(
        "create",
        RunStatus::Succeeded,
        "2026-11-30T00:00:00Z",
        "2026-11-30T00:00:02Z",
    )];
    let m = state(&s, &runs);
    assert_eq!(due(&m, clock.now()), None);
    clock.advance(Duration::from_secs(299));
    assert_eq!(due(&m, clock.now()), None);
    clock.advance(Duration::from_secs(1));
    let d = due(&m, clock.now()).unwrap();
    assert_eq!(d.trigger, "schedule");
    // Without any run, it is due at once.
    assert!(due(&state(&s, &[]), clock.now()).is_some());
    // A running refresh is never doubled.
    let running = [Run {
        status: RunStatus::Running,
        finished_at: None,
        ..runs[0].clone()
    }];
    assert_eq!(due(&state(&s, &running), at("2027-01-01T00:00:00Z")), None);
}

#[test]
fn cron_waits_for_its_next_time() {
    let clock = FakeClock::new(at("2026-11-30T05:00:00Z"));
    let s = ModelSchedule::from_options(&options(&[("schedule", "cron 0 6 * * *")])).unwrap();
    let runs = [run(
        "create",
        RunStatus::Succeeded,
        "2026-11-30T04:00:00Z",
        "2026-11-30T04:00:01Z",
    )];
    let m = state(&s, &runs);
    assert_eq!(due(&m, clock.now()), None);
    clock.set(at("2026-11-30T05:59:59Z"));
    assert_eq!(due(&m, clock.now()), None);
    clock.set(at("2026-11-30T06:00:00Z"));
    assert_eq!(due(&m, clock.now()).unwrap().trigger, "schedule");
    // Once it ran at 06:00, the next is tomorrow.
    let ran = [run(
        "schedule",
        RunStatus::Succeeded,
        "2026-11-30T06:00:00Z",
        "2026-11-30T06:00:03Z",
    )];
    let m = state(&s, &ran);
    clock.set(at("2026-12-01T05:59:00Z"));
    assert_eq!(due(&m, clock.now()), None);
    clock.set(at("2026-12-01T06:00:00Z"));
    assert!(due(&m, clock.now()).is_some());
}

#[test]
fn on_change_follows_the_inputs() {
    let s = ModelSchedule::from_options(&options(&[("schedule", "on change")])).unwrap();
    let runs = [run(
        "create",
        RunStatus::Succeeded,
        "2026-11-30T00:00:00Z",
        "2026-11-30T00:00:01Z",
    )];
    let mut m = state(&s, &runs);
    let now = at("2026-11-30T01:00:00Z");
    assert_eq!(due(&m, now), None);
    m.input_changed = true;
    assert_eq!(due(&m, now).unwrap().reason, "an input changed");
}

#[test]
fn failures_are_retried_after_the_delay_until_retries_run_out() {
    let clock = FakeClock::new(at("2026-11-30T00:00:10Z"));
    let s = ModelSchedule::from_options(&options(&[
        ("schedule", "every 1 hour"),
        ("retries", "2"),
        ("retry_delay", "30s"),
    ]))
    .unwrap();
    let mut runs = vec![
        run(
            "create",
            RunStatus::Succeeded,
            "2026-11-30T00:00:00Z",
            "2026-11-30T00:00:01Z",
        ),
        run(
            "schedule",
            RunStatus::Failed,
            "2026-11-30T01:00:00Z",
            "2026-11-30T01:00:05Z",
        ),
    ];
    clock.set(at("2026-11-30T01:00:34Z"));
    assert_eq!(
        due(&state(&s, &runs), clock.now()),
        None,
        "within retry_delay"
    );
    clock.advance(Duration::from_secs(1));
    let d = due(&state(&s, &runs), clock.now()).unwrap();
    assert_eq!((d.trigger, d.reason.as_str()), ("retry", "retry 1 of 2"));
    runs.push(run(
        "retry",
        RunStatus::Failed,
        "2026-11-30T01:00:35Z",
        "2026-11-30T01:00:36Z",
    ));
    clock.set(at("2026-11-30T01:01:06Z"));
    assert_eq!(
        due(&state(&s, &runs), clock.now()).unwrap().reason,
        "retry 2 of 2"
    );
    runs.push(run(
        "retry",
        RunStatus::Failed,
        "2026-11-30T01:01:06Z",
        "2026-11-30T01:01:07Z",
    ));
    // Retries exhausted: the schedule decides again (an hour after the last attempt).
    clock.set(at("2026-11-30T01:30:00Z"));
    assert_eq!(due(&state(&s, &runs), clock.now()), None);
    clock.set(at("2026-11-30T02:01:06Z"));
    let d = due(&state(&s, &runs), clock.now()).unwrap();
    assert_eq!(d.trigger, "schedule");
    // A new chain gets its own retries.
    runs.push(run(
        "schedule",
        RunStatus::Failed,
        "2026-11-30T02:01:06Z",
        "2026-11-30T02:01:07Z",
    ));
    clock.set(at("2026-11-30T02:02:00Z"));
    assert_eq!(
        due(&state(&s, &runs), clock.now()).unwrap().trigger,
        "retry"
    );
}

#[test]
fn manual_failures_are_not_retried_but_interrupted_runs_are() {
    let s =
        ModelSchedule::from_options(&options(&[("schedule", "every 1 hour"), ("retries", "1")]))
            .unwrap();
    let manual = [run(
        "manual",
        RunStatus::Failed,
        "2026-11-30T00:00:00Z",
        "2026-11-30T00:00:01Z",
    )];
    assert_eq!(due(&state(&s, &manual), at("2026-11-30T00:10:00Z")), None);
    let mut interrupted = run(
        "manual",
        RunStatus::Failed,
        "2026-11-30T00:00:00Z",
        "2026-11-30T00:00:01Z",
    );
    interrupted.error = Some("interrupted: the server stopped during the refresh".into());
    let runs = [interrupted];
    let d = due(&state(&s, &runs), at("2026-11-30T00:00:01Z")).unwrap();
    assert_eq!(d.trigger, "retry");
    // With no retries left an interrupted run is still retried: it was not an attempt.
    let none = ModelSchedule::from_options(&options(&[("schedule", "on change")])).unwrap();
    assert!(due(&state(&none, &runs), at("2026-11-30T00:00:01Z")).is_some());
    // Skipped runs (an upstream failed) do not hide the failure before them.
    let skipped_after = [
        run(
            "schedule",
            RunStatus::Failed,
            "2026-11-30T00:00:00Z",
            "2026-11-30T00:00:01Z",
        ),
        run(
            "schedule",
            RunStatus::Skipped,
            "2026-11-30T00:00:02Z",
            "2026-11-30T00:00:02Z",
        ),
    ];
    assert_eq!(
        due(&state(&s, &skipped_after), at("2026-11-30T00:01:00Z"))
            .unwrap()
            .trigger,
        "retry"
    );
}
