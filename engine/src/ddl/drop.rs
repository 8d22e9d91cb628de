//! `DROP` of schemas, tables, sources, models and views: `RESTRICT` refuses while dependents
//! exist, `CASCADE` drops them first; the catalog rows go in one transaction, and the Delta
//! tables are removed after it committed.

use std::collections::{BTreeSet, HashMap};
use tributary_catalog::ObjectClass;

use datafusion::sql::sqlparser::ast;
use tributary_catalog::{CatalogObject, ObjectKind};

use super::kind_of;
use crate::context::StatementContext;
use crate::dialect::DropObjects;
use crate::error::{Error, Result};
use crate::names;
use crate::session::Output;

/// Everything that (transitively) reads from `ids`, dependents first.
fn with_dependents(cx: &StatementContext<'_>, ids: &[i64]) -> Result<Vec<i64>> {
    let edges = cx.catalog().dependencies()?;
    let mut downs: HashMap<i64, Vec<i64>> = HashMap::new();
    for (down, up) in edges {
        downs.entry(up).or_default().push(down);
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        id: i64,
        downs: &HashMap<i64, Vec<i64>>,
        seen: &mut BTreeSet<i64>,
        order: &mut Vec<i64>,
    ) {
        if !seen.insert(id) {
            return;
        }
        for d in downs.get(&id).into_iter().flatten() {
            visit(*d, downs, seen, order);
        }
        order.push(id);
    }
    for id in ids {
        visit(*id, &downs, &mut seen, &mut order);
    }
    Ok(order)
}

pub async fn drop_objects(cx: &StatementContext<'_>, drop: DropObjects) -> Result<Output> {
    let kind = kind_of(drop.kind);
    let catalog = cx.catalog();
    let mut targets = Vec::new();
    for name in &drop.names {
        let name = names::object_name(name, &cx.current_schema())?;
        match catalog.object(&name)? {
            Some(o) if o.kind == kind => targets.push(o),
            Some(o) => {
                return Err(Error::WrongObjectType(format!(
                    "\"{}\" is a {}, not a {}",
                    o.name, o.kind, kind
                )));
            }
            None if drop.if_exists => {}
            None => {
                return Err(Error::UndefinedObject {
                    kind: kind.into(),
                    name: name.to_string(),
                });
            }
        }
    }
    let ids: Vec<i64> = targets.iter().map(|o| o.id).collect();
    let all = if drop.cascade {
        with_dependents(cx, &ids)?
    } else {
        ids
    };
    drop_ids(cx, &all)?;
    Ok(Output::Command(format!("DROP {}", drop_tag(kind))))
}

fn drop_tag(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Source => "SOURCE",
        ObjectKind::Table => "TABLE",
        ObjectKind::Model => "MODEL",
        ObjectKind::View => "VIEW",
    }
}

/// Drops `ids` and everything that reads them (what `DROP CONNECTION ... CASCADE` removes).
pub(crate) fn drop_with_dependents(cx: &StatementContext<'_>, ids: &[i64]) -> Result<()> {
    let all = with_dependents(cx, ids)?;
    drop_ids(cx, &all)
}

fn drop_ids(cx: &StatementContext<'_>, ids: &[i64]) -> Result<()> {
    let catalog = cx.catalog();
    let objects: Vec<CatalogObject> = ids
        .iter()
        .filter_map(|id| catalog.object_by_id(*id).transpose())
        .collect::<Result<_, _>>()?;
    catalog.drop_objects(ids)?;
    for o in objects {
        cx.engine.inner.store().forget(o.id);
        if let Some(location) = &o.location
            && let Err(e) = cx.engine.inner.store().warehouse().remove(location)
        {
            tracing::warn!(object = %o.name, error = %e, "could not remove dropped table files");
        }
    }
    Ok(())
}

pub async fn drop_schemas(
    cx: &StatementContext<'_>,
    schemas: &[ast::ObjectName],
    if_exists: bool,
    cascade: bool,
) -> Result<Output> {
    let catalog = cx.catalog();
    for schema in schemas {
        let name = names::object_name(schema, "")?.name;
        if !catalog.schema_exists(&name)? {
            if if_exists {
                continue;
            }
            return Err(Error::UndefinedObject {
                kind: ObjectClass::Schema,
                name,
            });
        }
        if cascade {
            let ids: Vec<i64> = catalog
                .objects()?
                .into_iter()
                .filter(|o| o.name.schema == name)
                .map(|o| o.id)
                .collect();
            let all = with_dependents(cx, &ids)?;
            drop_ids(cx, &all)?;
        }
        catalog.drop_schema(&name)?;
    }
    Ok(Output::Command("DROP SCHEMA".into()))
}
