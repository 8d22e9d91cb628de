//! The `pg_catalog` schema wrapper: the library's `pg_catalog` with the tables that describe
//! Tributary's relations replaced by ones computed from the catalog when a query is planned
//! (`pg_class.relkind`, `pg_tables`, `pg_matviews`, `pg_views`, `pg_foreign_table` and its
//! server and wrapper, `pg_description`), so clients see tables, models, sources and views as
//! PostgreSQL would show them.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, RecordBatch, StringArray,
    StringBuilder, new_null_array,
};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, SchemaProvider, Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr as DfExpr;
use datafusion::physical_plan::ExecutionPlan;
use tributary_catalog::{CatalogObject, ObjectKind, ObjectName};

use super::functions::array_text;
use super::{PgCompat, description, int64s, strings};

/// The owner every relation reports (`pg_get_userbyid` answers `postgres` for any OID).
const OWNER: &str = "postgres";

/// The `pg_catalog` schema: the library's, with the tables of [`CompatKind`] computed here.
#[derive(Debug)]
pub(super) struct PgCatalogSchema {
    pub(super) inner: Arc<dyn SchemaProvider>,
    pub(super) compat: Arc<PgCompat>,
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let kind = match name.to_ascii_lowercase().as_str() {
            "pg_class" => CompatKind::Class,
            "pg_tables" => CompatKind::Tables,
            "pg_matviews" => CompatKind::Matviews,
            "pg_views" => CompatKind::Views,
            "pg_foreign_table" => CompatKind::ForeignTables,
            "pg_foreign_server" => CompatKind::ForeignServers,
            "pg_foreign_data_wrapper" => CompatKind::ForeignDataWrappers,
            "pg_description" => CompatKind::Descriptions,
            _ => return self.inner.table(name).await,
        };
        let mut inner = Vec::new();
        for table in kind.inner_tables() {
            match self.inner.table(table).await? {
                Some(t) => inner.push(t),
                None => return self.inner.table(name).await,
            }
        }
        let schema = kind.schema(&inner);
        Ok(Some(Arc::new(CompatTable {
            kind,
            schema,
            inner,
            compat: Arc::clone(&self.compat),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[derive(Debug, Clone, Copy)]
enum CompatKind {
    /// The library's `pg_class` with `relkind` (and `relispopulated`) from the catalog, and the
    /// array columns it lacks.
    Class,
    /// The library's `pg_tables` without models, sources and views.
    Tables,
    /// Models.
    Matviews,
    /// Views.
    Views,
    /// Sources, served by [`FILES_SERVER`].
    ForeignTables,
    /// The library's (empty) `pg_foreign_server` and [`FILES_SERVER`].
    ForeignServers,
    /// The library's (empty) `pg_foreign_data_wrapper` and [`FILES_WRAPPER`].
    ForeignDataWrappers,
    /// The library's `pg_description` and the comments of Tributary's relations and columns.
    Descriptions,
}

/// The foreign server every source is attached to: (OID, name). The OIDs sit just below the
/// range the library hands out (from 16384) and above those of the bundled catalog rows.
const FILES_SERVER: (i64, &str) = (16383, "files");
/// The foreign-data wrapper of [`FILES_SERVER`].
const FILES_WRAPPER: (i64, &str) = (16382, "tributary_files");
/// The OID of `pg_class` itself (`pg_description.classoid` of relations and columns).
const PG_CLASS_OID: i64 = 1259;
/// The OID of the bootstrap superuser, which owns everything.
const SUPERUSER_OID: i64 = 10;

impl CompatKind {
    /// The library tables this one is computed from.
    fn inner_tables(self) -> &'static [&'static str] {
        match self {
            CompatKind::Class => &["pg_class", "pg_namespace"],
            CompatKind::Tables => &["pg_tables"],
            CompatKind::Matviews | CompatKind::Views => &[],
            CompatKind::ForeignTables => &["pg_class", "pg_namespace", "pg_foreign_table"],
            CompatKind::ForeignServers => &["pg_foreign_server"],
            CompatKind::ForeignDataWrappers => &["pg_foreign_data_wrapper"],
            CompatKind::Descriptions => &["pg_class", "pg_namespace", "pg_description"],
        }
    }

    fn schema(self, inner: &[Arc<dyn TableProvider>]) -> SchemaRef {
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        let text_array = |name: &str| {
            Field::new(
                name,
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                true,
            )
        };
        match self {
            CompatKind::Class => {
                let base = inner[0].schema();
                let mut fields: Vec<Field> =
                    base.fields().iter().map(|f| f.as_ref().clone()).collect();
                for extra in ["reloptions", "relacl"] {
                    if base.field_with_name(extra).is_err() {
                        fields.push(text_array(extra));
                    }
                }
                Arc::new(Schema::new_with_metadata(fields, base.metadata().clone()))
            }
            CompatKind::Tables
            | CompatKind::ForeignTables
            | CompatKind::ForeignServers
            | CompatKind::ForeignDataWrappers
            | CompatKind::Descriptions => inner[inner.len() - 1].schema(),
            CompatKind::Matviews => Arc::new(Schema::new(vec![
                text("schemaname"),
                text("matviewname"),
                text("matviewowner"),
                text("tablespace"),
                Field::new("hasindexes", DataType::Boolean, true),
                Field::new("ispopulated", DataType::Boolean, true),
                text("definition"),
            ])),
            CompatKind::Views => Arc::new(Schema::new(vec![
                text("schemaname"),
                text("viewname"),
                text("viewowner"),
                text("definition"),
            ])),
        }
    }
}

/// A `pg_catalog` table computed when a query is planned, from the catalog and the library's
/// own tables.
#[derive(Debug)]
struct CompatTable {
    kind: CompatKind,
    schema: SchemaRef,
    inner: Vec<Arc<dyn TableProvider>>,
    compat: Arc<PgCompat>,
}

#[async_trait]
impl TableProvider for CompatTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        // What `pg_class` says about the catalog itself, as in PostgreSQL.
        match self.kind {
            CompatKind::Tables | CompatKind::Matviews | CompatKind::Views => TableType::View,
            _ => TableType::Base,
        }
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = match self.kind {
            CompatKind::Class => self.relations(state).await?.0,
            CompatKind::Tables => self.pg_tables(state).await?,
            CompatKind::Matviews => self.pg_matviews()?,
            CompatKind::Views => self.pg_views()?,
            CompatKind::ForeignTables => self.pg_foreign_table(state).await?,
            CompatKind::ForeignServers => {
                self.with_rows(state, 1, |column, _| match column {
                    "oid" => ScalarValue::Int64(Some(FILES_SERVER.0)),
                    "srvname" => ScalarValue::from(FILES_SERVER.1),
                    "srvowner" => ScalarValue::Int64(Some(SUPERUSER_OID)),
                    "srvfdw" => ScalarValue::Int64(Some(FILES_WRAPPER.0)),
                    _ => ScalarValue::Null,
                })
                .await?
            }
            CompatKind::ForeignDataWrappers => {
                self.with_rows(state, 1, |column, _| match column {
                    "oid" => ScalarValue::Int64(Some(FILES_WRAPPER.0)),
                    "fdwname" => ScalarValue::from(FILES_WRAPPER.1),
                    "fdwowner" => ScalarValue::Int64(Some(SUPERUSER_OID)),
                    "fdwhandler" | "fdwvalidator" => ScalarValue::Int64(Some(0)),
                    _ => ScalarValue::Null,
                })
                .await?
            }
            CompatKind::Descriptions => self.pg_description(state).await?,
        };
        MemTable::try_new(Arc::clone(&self.schema), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

async fn read_all(table: &Arc<dyn TableProvider>, state: &dyn Session) -> DfResult<RecordBatch> {
    let plan = table.scan(state, None, &[], None).await?;
    let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await?;
    Ok(concat_batches(&table.schema(), &batches)?)
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> DfResult<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog column {name} missing")))
}

fn relkind(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Table => "r",
        ObjectKind::Model => "m",
        ObjectKind::Source => "f",
        ObjectKind::View => "v",
    }
}

impl CompatTable {
    /// `pg_class` as PostgreSQL would describe Tributary's relations, and the OIDs of those.
    async fn relations(
        &self,
        state: &dyn Session,
    ) -> DfResult<(RecordBatch, Vec<(i64, CatalogObject)>)> {
        let class = read_all(&self.inner[0], state).await?;
        let namespaces = read_all(&self.inner[1], state).await?;
        let objects = self.compat.objects_by_name()?;

        let ns_oids = int64s(column(&namespaces, "oid")?)?;
        let ns_names = strings(column(&namespaces, "nspname")?)?;
        let schema_of: HashMap<i64, &str> = ns_oids
            .iter()
            .zip(ns_names.iter())
            .filter_map(|(oid, name)| Some((oid?, name?)))
            .collect();

        let oids = int64s(column(&class, "oid")?)?;
        let names = strings(column(&class, "relname")?)?;
        let namespaces = int64s(column(&class, "relnamespace")?)?;
        let kinds = strings(column(&class, "relkind")?)?;
        let populated = column(&class, "relispopulated")?.as_boolean().clone();

        let mut relkinds = StringBuilder::new();
        let mut relispopulated = BooleanBuilder::new();
        let mut relations = Vec::new();
        for row in 0..class.num_rows() {
            let object = match (
                namespaces.is_valid(row).then(|| namespaces.value(row)),
                names.is_valid(row).then(|| names.value(row)),
            ) {
                (Some(ns), Some(name)) => schema_of
                    .get(&ns)
                    .and_then(|schema| objects.get(&ObjectName::new(*schema, name))),
                _ => None,
            };
            match object {
                Some(object) => {
                    relkinds.append_value(relkind(object.kind));
                    relispopulated.append_value(
                        object.kind != ObjectKind::Model || object.published_version.is_some(),
                    );
                    if oids.is_valid(row) {
                        relations.push((oids.value(row), object.clone()));
                    }
                }
                None => {
                    relkinds.append_option(kinds.is_valid(row).then(|| kinds.value(row)));
                    relispopulated
                        .append_option(populated.is_valid(row).then(|| populated.value(row)));
                }
            }
        }
        self.compat
            .relations
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(relations.iter().map(|(oid, o)| (*oid, o.name.clone())));

        let relkinds: ArrayRef = Arc::new(relkinds.finish());
        let relispopulated: ArrayRef = Arc::new(relispopulated.finish());
        let schema = CompatKind::Class.schema(&self.inner[..2]);
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                Ok(match field.name().as_str() {
                    "relkind" => Arc::clone(&relkinds),
                    "relispopulated" => Arc::clone(&relispopulated),
                    // Only partitions have a bound; PostgreSQL leaves it NULL otherwise.
                    "relpartbound" => new_null_array(field.data_type(), class.num_rows()),
                    name => match class.column_by_name(name) {
                        Some(c) => cast(c, field.data_type())?,
                        None => new_null_array(field.data_type(), class.num_rows()),
                    },
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok((RecordBatch::try_new(schema, columns)?, relations))
    }

    /// The library's rows of this table followed by `count` rows of `value(column, row)`.
    async fn with_rows(
        &self,
        state: &dyn Session,
        count: usize,
        value: impl Fn(&str, usize) -> ScalarValue,
    ) -> DfResult<RecordBatch> {
        let library = read_all(&self.inner[self.inner.len() - 1], state).await?;
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| {
                if count == 0 {
                    return Ok(new_null_array(field.data_type(), 0));
                }
                let values =
                    ScalarValue::iter_to_array((0..count).map(|i| value(field.name(), i)))?;
                Ok(cast(&values, field.data_type())?)
            })
            .collect::<DfResult<Vec<_>>>()?;
        let ours = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        Ok(concat_batches(&self.schema, [&library, &ours])?)
    }

    async fn pg_foreign_table(&self, state: &dyn Session) -> DfResult<RecordBatch> {
        let sources: Vec<(i64, CatalogObject)> = self
            .relations(state)
            .await?
            .1
            .into_iter()
            .filter(|(_, o)| o.kind == ObjectKind::Source)
            .collect();
        self.with_rows(state, sources.len(), |column, i| {
            let (oid, source) = &sources[i];
            match column {
                "ftrelid" => ScalarValue::Int64(Some(*oid)),
                "ftserver" => ScalarValue::Int64(Some(FILES_SERVER.0)),
                "ftoptions" => ScalarValue::from(array_text(
                    source
                        .options
                        .iter()
                        .filter(|(k, _)| k.as_str() != "description")
                        .map(|(k, v)| format!("{k}={v}")),
                )),
                _ => ScalarValue::Null,
            }
        })
        .await
    }

    async fn pg_description(&self, state: &dyn Session) -> DfResult<RecordBatch> {
        let mut comments: Vec<(i64, i64, String)> = Vec::new();
        for (oid, object) in self.relations(state).await?.1 {
            if let Some(comment) = description(&object) {
                comments.push((oid, 0, comment));
            }
            for (i, column) in object.columns.iter().enumerate() {
                if let Some(comment) = &column.comment {
                    comments.push((oid, i as i64 + 1, comment.clone()));
                }
            }
        }
        self.with_rows(state, comments.len(), |column, i| {
            let (oid, number, comment) = &comments[i];
            match column {
                "objoid" => ScalarValue::Int64(Some(*oid)),
                "classoid" => ScalarValue::Int64(Some(PG_CLASS_OID)),
                "objsubid" => ScalarValue::Int64(Some(*number)),
                "description" => ScalarValue::from(comment.as_str()),
                _ => ScalarValue::Null,
            }
        })
        .await
    }

    async fn pg_tables(&self, state: &dyn Session) -> DfResult<RecordBatch> {
        let tables = read_all(&self.inner[0], state).await?;
        let objects = self.compat.objects_by_name()?;
        let schemas = strings(column(&tables, "schemaname")?)?;
        let names = strings(column(&tables, "tablename")?)?;
        let keep: BooleanArray = schemas
            .iter()
            .zip(names.iter())
            .map(|(schema, name)| {
                let kind = match (schema, name) {
                    (Some(s), Some(n)) => objects.get(&ObjectName::new(s, n)).map(|o| o.kind),
                    _ => None,
                };
                Some(kind.is_none_or(|k| k == ObjectKind::Table))
            })
            .collect();
        Ok(filter_record_batch(&tables, &keep)?)
    }

    fn of_kind(&self, kind: ObjectKind) -> DfResult<Vec<CatalogObject>> {
        let mut objects: Vec<CatalogObject> = self
            .compat
            .objects()?
            .into_iter()
            .filter(|o| o.kind == kind)
            .collect();
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(objects)
    }

    fn pg_matviews(&self) -> DfResult<RecordBatch> {
        let models = self.of_kind(ObjectKind::Model)?;
        let text = |f: &dyn Fn(&CatalogObject) -> Option<String>| -> ArrayRef {
            Arc::new(models.iter().map(f).collect::<StringArray>())
        };
        let columns: Vec<ArrayRef> = vec![
            text(&|o| Some(o.name.schema.clone())),
            text(&|o| Some(o.name.name.clone())),
            text(&|_| Some(OWNER.to_string())),
            text(&|_| None),
            Arc::new(models.iter().map(|_| Some(false)).collect::<BooleanArray>()),
            Arc::new(
                models
                    .iter()
                    .map(|o| Some(o.published_version.is_some()))
                    .collect::<BooleanArray>(),
            ),
            text(&|o| o.query.clone()),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    fn pg_views(&self) -> DfResult<RecordBatch> {
        let views = self.of_kind(ObjectKind::View)?;
        let text = |f: &dyn Fn(&CatalogObject) -> Option<String>| -> ArrayRef {
            Arc::new(views.iter().map(f).collect::<StringArray>())
        };
        let columns: Vec<ArrayRef> = vec![
            text(&|o| Some(o.name.schema.clone())),
            text(&|o| Some(o.name.name.clone())),
            text(&|_| Some(OWNER.to_string())),
            text(&|o| o.query.clone()),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}
