//! Catalog behaviour through its public API, on a real SQLite file.

use std::collections::BTreeMap;
use tributary_catalog::ObjectClass;

use tributary_catalog::{
    Catalog, ColumnDef, Error, NewObject, ObjectKind, ObjectName, RunOutcome, RunStatus,
};

fn new_object(schema: &str, name: &str, kind: ObjectKind) -> NewObject {
    NewObject {
        name: ObjectName::new(schema, name),
        kind,
        sql: format!("CREATE {kind} {schema}.{name}"),
        query: None,
        default_schema: None,
        options: BTreeMap::new(),
        columns: vec![ColumnDef {
            name: "a".into(),
            data_type: "bigint".into(),
            nullable: false,
            comment: None,
        }],
        location: kind.is_stored().then(|| format!("{schema}/{name}")),
        comment: None,
    }
}

#[test]
fn definitions_survive_reopening_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    {
        let catalog = Catalog::open(&path).unwrap();
        catalog.create_schema("raw", false).unwrap();
        let t = catalog
            .create_object(&new_object("raw", "t", ObjectKind::Table), &[])
            .unwrap();
        catalog.set_published_version(t.id, 3).unwrap();
    }
    let catalog = Catalog::open(&path).unwrap();
    assert_eq!(catalog.schemas().unwrap(), ["public", "raw"]);
    let t = catalog
        .object(&ObjectName::new("raw", "t"))
        .unwrap()
        .unwrap();
    assert_eq!(t.published_version, Some(3));
    assert_eq!(t.columns[0].data_type, "bigint");
}

#[test]
fn names_are_unique_across_kinds_and_schemas_must_exist() {
    let catalog = Catalog::open_in_memory().unwrap();
    catalog
        .create_object(&new_object("public", "x", ObjectKind::Source), &[])
        .unwrap();
    let e = catalog
        .create_object(&new_object("public", "x", ObjectKind::Model), &[])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Duplicate {
                kind: ObjectClass::Source,
                ..
            }
        ),
        "{e}"
    );
    let e = catalog
        .create_object(&new_object("nowhere", "x", ObjectKind::Model), &[])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                kind: ObjectClass::Schema,
                ..
            }
        ),
        "{e}"
    );
    assert!(!catalog.create_schema("public", true).unwrap());
    assert!(matches!(
        catalog.create_schema("public", false),
        Err(Error::Duplicate { .. })
    ));
}

#[test]
fn dropping_respects_dependents() {
    let catalog = Catalog::open_in_memory().unwrap();
    let src = catalog
        .create_object(&new_object("public", "src", ObjectKind::Source), &[])
        .unwrap();
    let model = catalog
        .create_object(&new_object("public", "m", ObjectKind::Model), &[src.id])
        .unwrap();
    let e = catalog.drop_objects(&[src.id]).unwrap_err();
    match e {
        Error::HasDependents { dependents, .. } => assert_eq!(dependents, ["public.m"]),
        other => panic!("{other}"),
    }
    assert_eq!(catalog.dependencies().unwrap(), [(model.id, src.id)]);
    catalog.drop_objects(&[model.id, src.id]).unwrap();
    assert!(catalog.objects().unwrap().is_empty());
    assert!(catalog.dependencies().unwrap().is_empty());
    let e = catalog.drop_schema("nowhere").unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }));
}

#[test]
fn replacing_with_a_new_location_unpublishes() {
    let catalog = Catalog::open_in_memory().unwrap();
    let m = catalog
        .create_object(&new_object("public", "m", ObjectKind::Model), &[])
        .unwrap();
    catalog.set_published_version(m.id, 2).unwrap();
    let mut same = new_object("public", "m", ObjectKind::Model);
    same.sql = "changed options only".into();
    catalog.replace_object(m.id, &same, &[]).unwrap();
    assert_eq!(
        catalog
            .object_by_id(m.id)
            .unwrap()
            .unwrap()
            .published_version,
        Some(2)
    );
    let mut moved = new_object("public", "m", ObjectKind::Model);
    moved.location = Some("public/m-2".into());
    catalog.replace_object(m.id, &moved, &[]).unwrap();
    let after = catalog.object_by_id(m.id).unwrap().unwrap();
    assert_eq!(after.published_version, None);
    assert_eq!(after.location.as_deref(), Some("public/m-2"));
}

#[test]
fn runs_are_recorded_from_start_to_finish() {
    let catalog = Catalog::open_in_memory().unwrap();
    let m = catalog
        .create_object(&new_object("public", "m", ObjectKind::Model), &[])
        .unwrap();
    let run = catalog.start_run(&m, "manual").unwrap();
    assert_eq!(catalog.running_runs().unwrap().len(), 1);
    catalog
        .finish_run(
            run,
            &RunOutcome {
                status: Some(RunStatus::Succeeded),
                strategy: Some("full".into()),
                rows_written: Some(10),
                delta_version: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    catalog.skip_run(&m, "schedule", "upstream failed").unwrap();
    let runs = catalog.runs().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].rows_written, Some(10));
    assert!(runs[0].finished_at.is_some());
    assert_eq!(runs[1].status, RunStatus::Skipped);
    assert_eq!(runs[1].reason.as_deref(), Some("upstream failed"));
    assert!(catalog.running_runs().unwrap().is_empty());
}

#[test]
fn last_successful_refresh_per_model() {
    let catalog = Catalog::open_in_memory().unwrap();
    let m = catalog
        .create_object(&new_object("public", "m", ObjectKind::Model), &[])
        .unwrap();
    let never = catalog
        .create_object(&new_object("public", "never", ObjectKind::Model), &[])
        .unwrap();
    let succeeded = RunOutcome {
        status: Some(RunStatus::Succeeded),
        ..Default::default()
    };
    let failed = RunOutcome {
        status: Some(RunStatus::Failed),
        ..Default::default()
    };
    let first = catalog.start_run(&m, "manual").unwrap();
    catalog.finish_run(first, &succeeded).unwrap();
    let second = catalog.start_run(&m, "manual").unwrap();
    catalog.finish_run(second, &succeeded).unwrap();
    let third = catalog.start_run(&m, "manual").unwrap();
    catalog.finish_run(third, &failed).unwrap();
    let run = catalog.start_run(&never, "manual").unwrap();
    catalog.finish_run(run, &failed).unwrap();

    let last = catalog.last_successful_refreshes().unwrap();
    let runs = catalog.runs().unwrap();
    assert_eq!(
        last,
        vec![(
            ObjectName::new("public", "m"),
            runs[1].finished_at.clone().unwrap()
        )]
    );
}
