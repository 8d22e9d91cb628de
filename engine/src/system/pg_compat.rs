//! What PostgreSQL clients (psql first) need beyond the `pg_catalog` that
//! `datafusion-pg-catalog` provides:
//!
//! - `pg_catalog` describing Tributary's objects as PostgreSQL would: `pg_class.relkind` is `r`
//!   for tables, `m` for models (materialized views), `f` for sources (foreign tables) and `v`
//!   for views; `pg_tables`, `pg_matviews` and `pg_views` list them accordingly, sources
//!   appear in `pg_foreign_table` (on a `files` server) and comments in `pg_description`
//!   ([`install`] wraps the schema the library registers);
//! - functions clients call on catalog rows (`pg_get_indexdef`, `pg_get_viewdef`,
//!   `col_description`, `obj_description`, `pg_size_pretty`, ...);
//! - SQL rewrites, applied before the library's own rules: PostgreSQL's names for unnamed result
//!   columns ([`name_columns`]) and constructs DataFusion cannot plan as written
//!   ([`fix_for_planning`]): `ARRAY(subquery)`, `x = ANY(column)` over catalog columns that hold
//!   PostgreSQL array text, and subqueries that call set-returning functions on outer columns.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::{Arc, RwLock, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Int64Array, RecordBatch, StringArray,
    StringBuilder, new_null_array,
};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::catalog::{MemTable, SchemaProvider, Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr as DfExpr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, BinaryOperator, CastKind, DataType as SqlDataType, Expr, Function,
    FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArgumentList, FunctionArguments,
    GroupByExpr, Ident, ObjectName as SqlName, ObjectNamePart, OrderByExpr, OrderByKind, Query,
    Select, SelectItem, SetExpr, Statement, TableFactor, Value, Visit, VisitMut, Visitor,
    VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use tributary_catalog::{CatalogObject, ObjectKind, ObjectName};

use crate::engine::EngineInner;
use crate::error::{Error, Result};

const PG_CATALOG: &str = "pg_catalog";
/// The owner every relation reports (`pg_get_userbyid` answers `postgres` for any OID).
const OWNER: &str = "postgres";
/// The function `x = ANY(column)` is rewritten to.
const ANY_EQ: &str = "tributary_any_eq";
/// The function `array_to_string(column, ...)` is rewritten to.
const ARRAY_TO_STRING: &str = "tributary_array_to_string";

/// State shared by the wrapped `pg_catalog` tables and the functions that take relation OIDs.
#[derive(Debug)]
pub(crate) struct PgCompat {
    engine: Weak<EngineInner>,
    /// Tributary's relations by the OID `pg_class` last listed them with. OIDs are handed out
    /// by the library when it lists relations and stay stable while the server runs.
    relations: RwLock<HashMap<i64, ObjectName>>,
}

impl PgCompat {
    fn engine(&self) -> DfResult<Arc<EngineInner>> {
        self.engine
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("engine shut down".into()))
    }

    fn objects(&self) -> DfResult<Vec<CatalogObject>> {
        self.engine()?
            .catalog
            .objects()
            .map_err(|e| DataFusionError::External(Box::new(Error::from(e))))
    }

    /// The catalog object a relation OID stands for, if it is one of Tributary's.
    fn object(
        &self,
        oid: i64,
        objects: &HashMap<ObjectName, CatalogObject>,
    ) -> Option<CatalogObject> {
        let name = self
            .relations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&oid)
            .cloned()?;
        objects.get(&name).cloned()
    }

    fn objects_by_name(&self) -> DfResult<HashMap<ObjectName, CatalogObject>> {
        Ok(self
            .objects()?
            .into_iter()
            .map(|o| (o.name.clone(), o))
            .collect())
    }
}

/// Wraps the `pg_catalog` schema registered by `datafusion_pg_catalog::setup_pg_catalog` in
/// `catalog` and registers the extra functions.
pub(crate) fn install(
    ctx: &SessionContext,
    catalog: &str,
    engine: Weak<EngineInner>,
) -> Result<()> {
    let database = ctx
        .catalog(catalog)
        .ok_or_else(|| Error::Internal(format!("catalog {catalog} missing")))?;
    let inner = database
        .schema(PG_CATALOG)
        .ok_or_else(|| Error::Internal("pg_catalog schema missing".into()))?;
    let compat = Arc::new(PgCompat {
        engine,
        relations: RwLock::new(HashMap::new()),
    });
    database.register_schema(
        PG_CATALOG,
        Arc::new(PgCatalogSchema {
            inner,
            compat: compat.clone(),
        }),
    )?;
    for udf in functions(&compat) {
        ctx.register_udf(udf);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// pg_catalog tables

#[derive(Debug)]
struct PgCatalogSchema {
    inner: Arc<dyn SchemaProvider>,
    compat: Arc<PgCompat>,
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
            compat: self.compat.clone(),
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
        self.schema.clone()
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
        MemTable::try_new(self.schema.clone(), vec![vec![batch]])?
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

fn int64s(array: &ArrayRef) -> DfResult<Int64Array> {
    Ok(cast(array, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

fn strings(array: &ArrayRef) -> DfResult<StringArray> {
    Ok(cast(array, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// An object's comment (`COMMENT ON`, or the `description` option it was declared with).
fn description(object: &CatalogObject) -> Option<String> {
    object
        .comment
        .clone()
        .or_else(|| object.options.get("description").cloned())
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
                    "relkind" => relkinds.clone(),
                    "relispopulated" => relispopulated.clone(),
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
        let ours = RecordBatch::try_new(self.schema.clone(), columns)?;
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
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
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
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

// ---------------------------------------------------------------------------------------------
// Functions

type FunctionBody = fn(&PgCompat, &[ArrayRef], usize) -> DfResult<ArrayRef>;

/// A function clients call on catalog rows. Arguments are taken as any type and converted in
/// the body (OIDs arrive as `int4`, `int8` or text).
struct CompatFunction {
    name: &'static str,
    signature: Signature,
    return_type: DataType,
    compat: Arc<PgCompat>,
    body: FunctionBody,
}

impl std::fmt::Debug for CompatFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompatFunction")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for CompatFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for CompatFunction {}

impl Hash for CompatFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for CompatFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.return_type.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        Ok(ColumnarValue::Array((self.body)(
            &self.compat,
            &arrays,
            rows,
        )?))
    }
}

fn functions(compat: &Arc<PgCompat>) -> Vec<ScalarUDF> {
    let function = |name: &'static str, arities: &[usize], return_type: DataType, body| {
        let signature = Signature::one_of(
            arities.iter().map(|n| TypeSignature::Any(*n)).collect(),
            Volatility::Stable,
        );
        ScalarUDF::new_from_impl(CompatFunction {
            name,
            signature,
            return_type,
            compat: compat.clone(),
            body,
        })
    };
    vec![
        // Tributary has no indexes, rules or triggers.
        function("pg_get_indexdef", &[1, 3], DataType::Utf8, null_text),
        function("pg_get_ruledef", &[1, 2], DataType::Utf8, null_text),
        function("pg_get_triggerdef", &[1, 2], DataType::Utf8, null_text),
        function("pg_get_viewdef", &[1, 2], DataType::Utf8, view_definition),
        function("col_description", &[2], DataType::Utf8, column_comment),
        function("obj_description", &[1, 2], DataType::Utf8, object_comment),
        function("shobj_description", &[2], DataType::Utf8, null_text),
        function("pg_table_size", &[1], DataType::Int64, null_int),
        function("pg_indexes_size", &[1], DataType::Int64, null_int),
        function("pg_size_pretty", &[1], DataType::Utf8, size_pretty),
        // The library's takes only `int4`; psql passes the OID as a string literal.
        function(
            "pg_relation_is_publishable",
            &[1],
            DataType::Boolean,
            publishable,
        ),
        function("pg_has_role", &[2, 3], DataType::Boolean, always_true),
        function(
            "pg_function_is_visible",
            &[1],
            DataType::Boolean,
            always_true,
        ),
        function("pg_type_is_visible", &[1], DataType::Boolean, always_true),
        function("pg_get_function_result", &[1], DataType::Utf8, null_text),
        function("pg_get_function_arguments", &[1], DataType::Utf8, null_text),
        function("pg_database_size", &[1], DataType::Int64, null_int),
        ScalarUDF::new_from_impl(TextArrayFunction::new(TextArrayOp::AnyEq)),
        ScalarUDF::new_from_impl(TextArrayFunction::new(TextArrayOp::ToString)),
    ]
}

fn null_text(_: &PgCompat, _: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    Ok(new_null_array(&DataType::Utf8, rows))
}

/// Tributary has one role that sees everything.
fn always_true(_: &PgCompat, _: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    Ok(Arc::new(BooleanArray::from(vec![true; rows])))
}

fn null_int(_: &PgCompat, _: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    Ok(new_null_array(&DataType::Int64, rows))
}

/// `pg_get_viewdef(oid [, pretty])`: the query of a view or model.
fn view_definition(compat: &PgCompat, args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let objects = compat.objects_by_name()?;
    let oids = int64s(&args[0])?;
    let out: StringArray = oids
        .iter()
        .map(|oid| {
            let object = compat.object(oid?, &objects)?;
            matches!(object.kind, ObjectKind::View | ObjectKind::Model)
                .then_some(object.query)
                .flatten()
        })
        .collect();
    Ok(Arc::new(out))
}

/// `col_description(table oid, column number)`: the column's comment.
fn column_comment(compat: &PgCompat, args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let objects = compat.objects_by_name()?;
    let oids = int64s(&args[0])?;
    let numbers = int64s(&args[1])?;
    let out: StringArray = oids
        .iter()
        .zip(numbers.iter())
        .map(|(oid, number)| {
            let object = compat.object(oid?, &objects)?;
            let index = usize::try_from(number?.checked_sub(1)?).ok()?;
            object.columns.get(index)?.comment.clone()
        })
        .collect();
    Ok(Arc::new(out))
}

/// `obj_description(oid [, catalog])`: the comment of a relation (other catalogs have none).
fn object_comment(compat: &PgCompat, args: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    let objects = compat.objects_by_name()?;
    let oids = int64s(&args[0])?;
    let catalogs = match args.get(1) {
        Some(a) => strings(a)?,
        None => StringArray::from(vec![Some("pg_class"); rows]),
    };
    let out: StringArray = oids
        .iter()
        .zip(catalogs.iter())
        .map(|(oid, catalog)| {
            if catalog?.trim_start_matches("pg_catalog.") != "pg_class" {
                return None;
            }
            description(&compat.object(oid?, &objects)?)
        })
        .collect();
    Ok(Arc::new(out))
}

/// `pg_relation_is_publishable(regclass)`: tables are, other relations are not.
fn publishable(compat: &PgCompat, args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let objects = compat.objects_by_name()?;
    let oids = int64s(&args[0])?;
    let out: BooleanArray = oids
        .iter()
        .map(|oid| Some(compat.object(oid?, &objects)?.kind == ObjectKind::Table))
        .collect();
    Ok(Arc::new(out))
}

/// `pg_size_pretty(bigint)`, with PostgreSQL's units and rounding.
fn size_pretty(_: &PgCompat, args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let sizes = int64s(&args[0])?;
    let out: StringArray = sizes.iter().map(|s| s.map(pretty_size)).collect();
    Ok(Arc::new(out))
}

fn pretty_size(bytes: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    if bytes.abs() < LIMIT {
        return format!("{bytes} bytes");
    }
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    // Keep one extra bit for rounding, as PostgreSQL does.
    let mut size = bytes >> 9;
    for unit in ["kB", "MB", "GB", "TB"] {
        if size.abs() < LIMIT * 2 - 1 || unit == "TB" {
            return format!("{} {unit}", half_rounded(size));
        }
        size >>= 10;
    }
    unreachable!()
}

/// Array functions applied to catalog columns, which may be Arrow lists or, as in the bundled
/// PostgreSQL catalog tables, PostgreSQL's text form of an array (`{a,b}`) or vector (`1 2`).
/// When the argument turns out to be a list, DataFusion's own function takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TextArrayOp {
    /// `tributary_any_eq(array, x)`: `x = ANY(array)`.
    AnyEq,
    /// `tributary_array_to_string(array, delimiter [, null_string])`.
    ToString,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TextArrayFunction {
    op: TextArrayOp,
    signature: Signature,
}

impl TextArrayFunction {
    fn new(op: TextArrayOp) -> Self {
        let arities: &[usize] = match op {
            TextArrayOp::AnyEq => &[2],
            TextArrayOp::ToString => &[2, 3],
        };
        Self {
            op,
            signature: Signature::one_of(
                arities.iter().map(|n| TypeSignature::Any(*n)).collect(),
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for TextArrayFunction {
    fn name(&self) -> &str {
        match self.op {
            TextArrayOp::AnyEq => ANY_EQ,
            TextArrayOp::ToString => ARRAY_TO_STRING,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(match self.op {
            TextArrayOp::AnyEq => DataType::Boolean,
            TextArrayOp::ToString => DataType::Utf8,
        })
    }

    fn simplify(&self, args: Vec<DfExpr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        let (DataType::List(element)
        | DataType::LargeList(element)
        | DataType::FixedSizeList(element, _)) = info.get_data_type(&args[0])?
        else {
            return Ok(ExprSimplifyResult::Original(args));
        };
        Ok(ExprSimplifyResult::Simplified(match self.op {
            TextArrayOp::AnyEq => {
                let [haystack, needle] = <[DfExpr; 2]>::try_from(args)
                    .map_err(|_| DataFusionError::Internal("two arguments".into()))?;
                let needle = needle.cast_to(element.data_type(), info.schema())?;
                datafusion::functions_nested::expr_fn::array_has(haystack, needle)
            }
            TextArrayOp::ToString => {
                datafusion::functions_nested::string::array_to_string_udf().call(args)
            }
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        let elements = array_elements(&arrays[0], rows)?;
        let second = strings(&arrays[1])?;
        let out: ArrayRef = match self.op {
            TextArrayOp::AnyEq => Arc::new(
                elements
                    .iter()
                    .zip(second.iter())
                    .map(|(elements, needle)| {
                        let (elements, needle) = (elements.as_ref()?, needle?);
                        if elements.iter().any(|e| e.as_deref() == Some(needle)) {
                            Some(true)
                        } else if elements.iter().any(Option::is_none) {
                            None
                        } else {
                            Some(false)
                        }
                    })
                    .collect::<BooleanArray>(),
            ),
            TextArrayOp::ToString => {
                let null_strings = arrays.get(2).map(strings).transpose()?;
                Arc::new(
                    elements
                        .iter()
                        .zip(second.iter())
                        .enumerate()
                        .map(|(row, (elements, delimiter))| {
                            let (elements, delimiter) = (elements.as_ref()?, delimiter?);
                            let null_string = match &null_strings {
                                Some(n) => Some(n.is_valid(row).then(|| n.value(row))?),
                                None => None,
                            };
                            let parts: Vec<&str> = elements
                                .iter()
                                .filter_map(|e| e.as_deref().or(null_string))
                                .collect();
                            Some(parts.join(delimiter))
                        })
                        .collect::<StringArray>(),
                )
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The elements of each row of an array argument: a list, or PostgreSQL array text.
fn array_elements(array: &ArrayRef, rows: usize) -> DfResult<Vec<Option<Vec<Option<String>>>>> {
    Ok(match array.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let as_list = cast(
                array,
                &DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            )?;
            let list = as_list.as_list::<i32>();
            (0..rows)
                .map(|i| {
                    list.is_valid(i).then(|| {
                        list.value(i)
                            .as_string::<i32>()
                            .iter()
                            .map(|v| v.map(String::from))
                            .collect()
                    })
                })
                .collect()
        }
        _ => strings(array)?
            .iter()
            .map(|text| text.map(parse_array_text))
            .collect(),
    })
}

/// The elements of PostgreSQL's text form of an array (`{a,"b c",NULL}`, nested braces
/// flattened) or of an `int2vector`/`oidvector` (`1 2 3`).
fn parse_array_text(text: &str) -> Vec<Option<String>> {
    let text = text.trim();
    if !text.starts_with('{') {
        return text
            .split_whitespace()
            .map(|s| Some(s.to_string()))
            .collect();
    }
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut any = false;
    let mut finish = |current: &mut String, quoted: &mut bool, any: &mut bool| {
        if *any {
            let value = std::mem::take(current);
            if !*quoted && value.eq_ignore_ascii_case("null") {
                out.push(None);
            } else {
                out.push(Some(value));
            }
        }
        *quoted = false;
        *any = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                    any = true;
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                quoted = true;
                any = true;
            }
            _ if in_quotes => current.push(c),
            '{' => {}
            '}' | ',' => finish(&mut current, &mut quoted, &mut any),
            c if c.is_whitespace() => {}
            c => {
                current.push(c);
                any = true;
            }
        }
    }
    out
}

/// PostgreSQL's text form of a one-dimensional text array.
fn array_text(elements: impl Iterator<Item = String>) -> String {
    let quoted: Vec<String> = elements
        .map(|e| {
            let plain = !e.is_empty()
                && !e.eq_ignore_ascii_case("null")
                && !e
                    .chars()
                    .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
            if plain {
                e
            } else {
                format!("\"{}\"", e.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect();
    format!("{{{}}}", quoted.join(","))
}

// ---------------------------------------------------------------------------------------------
// SQL: result column names

/// Names unnamed result columns the way PostgreSQL does (`count(*)` is `count`, a cast is
/// named after its operand or else its type, `CASE` after its `ELSE` branch or else `case`,
/// anything else `?column?`), in every SELECT of a query. DataFusion needs unique names in a
/// SELECT list where PostgreSQL allows repeats, so a repeated name gets a `_1`, `_2`, ...
/// suffix. SELECT lists with a wildcard are left alone (their other names are unknown here),
/// and so is an item whose name a GROUP BY or HAVING clause uses as an identifier (DataFusion
/// would resolve it to the item instead of the input column).
pub fn name_columns(stmt: &mut Statement) {
    if let Statement::Query(query) = stmt {
        let _ = query.visit(&mut NameColumns);
    }
}

struct NameColumns;

impl VisitorMut for NameColumns {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        name_set_expr(&mut query.body);
        ControlFlow::Continue(())
    }
}

fn name_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => name_select(select),
        SetExpr::SetOperation { left, right, .. } => {
            name_set_expr(left);
            name_set_expr(right);
        }
        _ => {}
    }
}

fn normalized(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

fn is_column_ref(expr: &Expr) -> bool {
    matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

fn name_select(select: &mut Select) {
    if select.projection.iter().any(|item| {
        matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    }) {
        return;
    }
    let mut grouping = HashSet::new();
    let mut collect = |e: &Expr| {
        if let Expr::Identifier(ident) = e {
            grouping.insert(normalized(ident));
        }
        false
    };
    any_expr(&select.group_by, &mut collect);
    any_expr(&select.having, &mut collect);

    let mut used: HashSet<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::UnnamedExpr(Expr::Identifier(ident)) => Some(normalized(ident)),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(idents)) => {
                idents.last().map(normalized)
            }
            SelectItem::ExprWithAlias { alias, .. } => Some(normalized(alias)),
            _ => None,
        })
        .collect();
    for item in &mut select.projection {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        if is_column_ref(expr) {
            continue;
        }
        let name = figure_name(expr).map_or_else(|| "?column?".to_string(), |(name, _)| name);
        if grouping.contains(&name) {
            continue;
        }
        let mut unique = name.clone();
        let mut n = 0;
        while used.contains(&unique) {
            n += 1;
            unique = format!("{name}_{n}");
        }
        used.insert(unique.clone());
        *item = SelectItem::ExprWithAlias {
            expr: expr.clone(),
            alias: Ident::with_quote('"', unique),
        };
    }
}

/// PostgreSQL's `FigureColname`: a name and its strength (2: from a column, function or
/// keyword; 1: from a type name or `case`).
fn figure_name(expr: &Expr) -> Option<(String, u8)> {
    let keyword = |s: &str| Some((s.to_string(), 2));
    match expr {
        Expr::Identifier(ident) => Some((normalized(ident), 2)),
        Expr::CompoundIdentifier(idents) => idents.last().map(|i| (normalized(i), 2)),
        Expr::CompoundFieldAccess { root, access_chain } => match access_chain.last() {
            Some(datafusion::sql::sqlparser::ast::AccessExpr::Dot(field)) => figure_name(field),
            _ => figure_name(root),
        },
        Expr::Function(f) => match f.name.0.last() {
            Some(ObjectNamePart::Identifier(ident)) => Some((normalized(ident), 2)),
            _ => None,
        },
        Expr::Cast {
            expr, data_type, ..
        } => match figure_name(expr) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some((type_name(&data_type.to_string()), 1)),
        },
        Expr::TypedString(typed) => Some((type_name(&typed.data_type.to_string()), 1)),
        Expr::Interval(_) => Some(("interval".into(), 1)),
        Expr::Nested(inner) => figure_name(inner),
        Expr::Collate { expr, .. } => figure_name(expr),
        Expr::Case { else_result, .. } => match else_result.as_deref().and_then(figure_name) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some(("case".into(), 1)),
        },
        Expr::Subquery(query) => first_column_name(query).map(|name| (name, 2)),
        Expr::Exists { .. } => keyword("exists"),
        Expr::Array(_) => keyword("array"),
        Expr::Tuple(_) => keyword("row"),
        Expr::Extract { .. } => keyword("extract"),
        Expr::Position { .. } => keyword("position"),
        Expr::Substring { .. } => keyword("substring"),
        Expr::Trim { .. } => keyword("trim"),
        Expr::Overlay { .. } => keyword("overlay"),
        Expr::Ceil { .. } => keyword("ceil"),
        Expr::Floor { .. } => keyword("floor"),
        Expr::AtTimeZone { .. } => keyword("timezone"),
        _ => None,
    }
}

/// The name of a query's first result column, as PostgreSQL would give it.
fn first_column_name(query: &Query) -> Option<String> {
    let mut body = query.body.as_ref();
    loop {
        match body {
            SetExpr::Select(select) => {
                return match select.projection.first()? {
                    SelectItem::UnnamedExpr(e) => Some(
                        figure_name(e).map_or_else(|| "?column?".to_string(), |(name, _)| name),
                    ),
                    SelectItem::ExprWithAlias { alias, .. } => Some(normalized(alias)),
                    _ => None,
                };
            }
            SetExpr::SetOperation { left, .. } => body = left,
            SetExpr::Query(q) => body = q.body.as_ref(),
            _ => return None,
        }
    }
}

/// PostgreSQL's name for a type as written in a cast (`int` is `int4`, `pg_catalog.text` is
/// `text`, array and length modifiers dropped).
fn type_name(written: &str) -> String {
    let lower = written.to_lowercase();
    let base = lower
        .split('(')
        .next()
        .unwrap_or_default()
        .trim_end_matches("[]")
        .trim();
    let base = base.rsplit('.').next().unwrap_or(base).trim_matches('"');
    match base {
        "int" | "integer" | "int4" => "int4",
        "bigint" | "int8" => "int8",
        "smallint" | "int2" => "int2",
        "real" | "float4" => "float4",
        "double precision" | "double" | "float" | "float8" => "float8",
        "boolean" | "bool" => "bool",
        "character varying" | "varchar" => "varchar",
        "character" | "char" => "bpchar",
        "decimal" | "dec" | "numeric" => "numeric",
        "timestamp with time zone" | "timestamptz" => "timestamptz",
        "timestamp" | "timestamp without time zone" => "timestamp",
        "time with time zone" | "timetz" => "timetz",
        "time" | "time without time zone" => "time",
        other => other,
    }
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// SQL: constructs DataFusion cannot plan as written

/// Rewrites what DataFusion cannot plan as PostgreSQL clients write it. Returns whether
/// anything changed.
///
/// - `ARRAY(SELECT e FROM ... ORDER BY ...)` becomes
///   `coalesce((SELECT array_agg(e ORDER BY ...) FROM ...), make_array())` (an empty array
///   when there are no rows, as in PostgreSQL). A subquery correlated through anything but
///   `inner = outer` conditions cannot be decorrelated by DataFusion and becomes NULL.
/// - `x = ANY(column)` becomes `tributary_any_eq(column, x)` and `array_to_string(column,
///   ...)` `tributary_array_to_string(column, ...)`, which also accept the PostgreSQL array
///   text of the bundled catalog tables.
/// - A scalar subquery that calls a set-returning function on outer columns
///   (`FROM unnest(outer.col)`, a LATERAL call DataFusion cannot plan) becomes NULL.
pub fn fix_for_planning(stmt: &mut Statement) -> bool {
    let mut fixes = Fixes { changed: false };
    let _ = stmt.visit(&mut fixes);
    fixes.changed
}

struct Fixes {
    changed: bool,
}

impl VisitorMut for Fixes {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let replacement = match expr {
            Expr::Function(f) => match (&f.args, f.name.0.as_slice()) {
                (FunctionArguments::Subquery(query), [ObjectNamePart::Identifier(name)])
                    if name.value.eq_ignore_ascii_case("array") =>
                {
                    Some(array_from_subquery(query))
                }
                (FunctionArguments::List(list), [.., ObjectNamePart::Identifier(name)])
                    if name.value.eq_ignore_ascii_case("array_to_string")
                        && matches!(list.args.first(),
                            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) if is_column_like(e)) =>
                {
                    let mut f = f.clone();
                    f.name = SqlName(vec![ObjectNamePart::Identifier(Ident::new(
                        ARRAY_TO_STRING,
                    ))]);
                    Some(Expr::Function(f))
                }
                _ => None,
            },
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } if is_column_like(right) => Some(call(ANY_EQ, vec![*right.clone(), *left.clone()])),
            Expr::Subquery(query) if calls_lateral_function(query) => Some(null()),
            _ => None,
        };
        if let Some(replacement) = replacement {
            *expr = replacement;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

fn is_column_like(expr: &Expr) -> bool {
    match expr {
        Expr::Nested(e) | Expr::Cast { expr: e, .. } => is_column_like(e),
        e => is_column_ref(e),
    }
}

fn null() -> Expr {
    Expr::Value(Value::Null.with_empty_span())
}

/// A NULL array (of text: the element type is unknown here, and text is what catalog queries
/// collect).
fn null_array() -> Expr {
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(null()),
        data_type: SqlDataType::Array(ArrayElemTypeDef::SquareBracket(
            Box::new(SqlDataType::Text),
            None,
        )),
        array: false,
        format: None,
    }
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    call_with(name, args, vec![])
}

fn call_with(name: &str, args: Vec<Expr>, clauses: Vec<FunctionArgumentClause>) -> Expr {
    Expr::Function(Function {
        name: SqlName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses,
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn array_from_subquery(query: &Query) -> Expr {
    let aggregated = match correlation(query) {
        Correlation::None => aggregate_select(query).unwrap_or_else(|| aggregate_derived(query)),
        Correlation::Equality => match aggregate_select(query) {
            Some(q) => q,
            None => return null_array(),
        },
        Correlation::Other => return null_array(),
    };
    call(
        "coalesce",
        vec![
            Expr::Subquery(Box::new(aggregated)),
            call("make_array", vec![]),
        ],
    )
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
];

/// `SELECT array_agg(e ORDER BY ...) FROM ... WHERE ...` for a plain one-column SELECT.
fn aggregate_select(query: &Query) -> Option<Query> {
    if query.with.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let plain_group =
        matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    if select.distinct.is_some() || !plain_group || select.having.is_some() {
        return None;
    }
    let (expr, alias) = match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] => (e, None),
        [SelectItem::ExprWithAlias { expr, alias }] => (expr, Some(normalized(alias))),
        _ => return None,
    };
    if any_expr(expr, &mut |e| {
        matches!(e, Expr::Function(f) if f.over.is_none() && matches!(f.name.0.last(),
            Some(ObjectNamePart::Identifier(i)) if AGGREGATES.contains(&i.value.to_lowercase().as_str())))
    }) {
        return None;
    }
    let mut order = Vec::new();
    if let Some(order_by) = &query.order_by {
        let OrderByKind::Expressions(exprs) = &order_by.kind else {
            return None;
        };
        for o in exprs {
            let resolved = match &o.expr {
                Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n == "1") => {
                    expr.clone()
                }
                Expr::Value(_) => return None,
                Expr::Identifier(i) if alias.as_deref() == Some(normalized(i).as_str()) => {
                    expr.clone()
                }
                other => other.clone(),
            };
            order.push(OrderByExpr {
                expr: resolved,
                ..o.clone()
            });
        }
    }
    let clauses = if order.is_empty() {
        vec![]
    } else {
        vec![FunctionArgumentClause::OrderBy(order)]
    };
    let mut select = select.clone();
    select.projection = vec![SelectItem::UnnamedExpr(call_with(
        "array_agg",
        vec![expr.clone()],
        clauses,
    ))];
    let mut out = query.clone();
    out.body = Box::new(SetExpr::Select(select));
    out.order_by = None;
    Some(out)
}

/// `SELECT array_agg(v) FROM (query) AS __array(v)` for any other one-column query.
fn aggregate_derived(query: &Query) -> Query {
    let template = r#"SELECT array_agg("__array"."v") FROM (SELECT 1) AS "__array"("v")"#;
    let mut out = match parse_query(template) {
        Some(q) => q,
        None => return query.clone(),
    };
    if let SetExpr::Select(select) = out.body.as_mut()
        && let Some(from) = select.from.first_mut()
        && let TableFactor::Derived { subquery, .. } = &mut from.relation
    {
        **subquery = query.clone();
    }
    out
}

fn parse_query(sql: &str) -> Option<Query> {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?.pop()? {
        Statement::Query(q) => Some(*q),
        _ => None,
    }
}

enum Correlation {
    None,
    /// Only through `inner = outer` conditions of the top-level WHERE.
    Equality,
    Other,
}

/// How a subquery refers to the query around it. Qualified column references whose qualifier
/// is not a relation of the subquery are outer references (unqualified ones are assumed to
/// be the subquery's own).
fn correlation(query: &Query) -> Correlation {
    if calls_lateral_function(query) {
        return Correlation::Other;
    }
    let defined = relation_names(query);
    let is_outer = |e: &Expr| match e {
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            !defined.contains(&normalized(&parts[parts.len() - 2]))
        }
        _ => false,
    };
    let mut total = 0;
    any_expr(query, &mut |e| {
        if is_outer(e) {
            total += 1;
        }
        false
    });
    if total == 0 {
        return Correlation::None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Correlation::Other;
    };
    let mut conjuncts = Vec::new();
    if let Some(selection) = &select.selection {
        split_and(selection, &mut conjuncts);
    }
    let count_outer = |e: &Expr| {
        let mut n = 0;
        any_expr(e, &mut |e| {
            if is_outer(e) {
                n += 1;
            }
            false
        });
        n
    };
    let equalities = conjuncts
        .iter()
        .filter(|c| match c {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                (is_outer(left) && count_outer(right) == 0)
                    || (is_outer(right) && count_outer(left) == 0)
            }
            _ => false,
        })
        .count();
    if equalities == total {
        Correlation::Equality
    } else {
        Correlation::Other
    }
}

fn split_and<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(left, out);
            split_and(right, out);
        }
        Expr::Nested(inner) => split_and(inner, out),
        other => out.push(other),
    }
}

/// Names the relations of a query (and of the queries nested in it) can be referred to by.
fn relation_names(query: &Query) -> HashSet<String> {
    struct Names(HashSet<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            let alias = match factor {
                TableFactor::Table { name, alias, .. } => {
                    if alias.is_none()
                        && let Some(ObjectNamePart::Identifier(ident)) = name.0.last()
                    {
                        self.0.insert(normalized(ident));
                    }
                    alias
                }
                TableFactor::Derived { alias, .. }
                | TableFactor::Function { alias, .. }
                | TableFactor::UNNEST { alias, .. }
                | TableFactor::TableFunction { alias, .. }
                | TableFactor::NestedJoin { alias, .. } => alias,
                _ => &None,
            };
            if let Some(alias) = alias {
                self.0.insert(normalized(&alias.name));
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let Some(with) = &query.with {
                for cte in &with.cte_tables {
                    self.0.insert(normalized(&cte.alias.name));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names(HashSet::new());
    let _ = query.visit(&mut names);
    names.0
}

/// Whether a query calls a function in FROM with column arguments (a LATERAL reference to an
/// outer row: `FROM unnest(t.arr)`), which DataFusion cannot plan in a subquery.
fn calls_lateral_function(query: &Query) -> bool {
    struct Lateral(bool);
    impl Visitor for Lateral {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            let mut column = |e: &Expr| is_column_ref(e);
            let lateral = match factor {
                TableFactor::Table {
                    args: Some(args), ..
                } => any_expr(args, &mut column),
                TableFactor::Function { args, .. } => any_expr(args, &mut column),
                TableFactor::UNNEST { array_exprs, .. } => any_expr(array_exprs, &mut column),
                TableFactor::TableFunction { expr, .. } => any_expr(expr, &mut column),
                _ => false,
            };
            if lateral {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut lateral = Lateral(false);
    let _ = query.visit(&mut lateral);
    lateral.0
}

/// Whether `pred` holds for any expression in `node` (every expression is visited until it
/// does).
fn any_expr<T: Visit + ?Sized>(node: &T, pred: &mut dyn FnMut(&Expr) -> bool) -> bool {
    struct Find<'a>(&'a mut dyn FnMut(&Expr) -> bool);
    impl Visitor for Find<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if (self.0)(expr) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    node.visit(&mut Find(pred)).is_break()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap();
        name_columns(&mut stmt);
        fix_for_planning(&mut stmt);
        stmt.to_string()
    }

    #[test]
    fn names_like_postgres() {
        assert_eq!(
            rewritten(
                "SELECT a.x, count(*), y::regclass, '1'::int, CASE WHEN true THEN 1 ELSE b END, NULL, NULL FROM a"
            ),
            r#"SELECT a.x, count(*) AS "count", y::REGCLASS AS "y", '1'::INT AS "int4", CASE WHEN true THEN 1 ELSE b END AS "b", NULL AS "?column?", NULL AS "?column?_1" FROM a"#
        );
        // GROUP BY names and wildcards keep DataFusion's names.
        assert_eq!(
            rewritten("SELECT lower(k), count(*) FROM t GROUP BY lower"),
            r#"SELECT lower(k), count(*) AS "count" FROM t GROUP BY lower"#
        );
        assert_eq!(rewritten("SELECT *, 1 FROM t"), "SELECT *, 1 FROM t");
    }

    #[test]
    fn array_subqueries() {
        assert_eq!(
            rewritten("SELECT array(SELECT name FROM t WHERE x > 1 ORDER BY 1)"),
            r#"SELECT coalesce((SELECT array_agg(name ORDER BY name) FROM t WHERE x > 1), make_array()) AS "array""#
        );
        assert_eq!(
            rewritten("SELECT array(SELECT name FROM t WHERE t.id = o.id) FROM o"),
            r#"SELECT coalesce((SELECT array_agg(name) FROM t WHERE t.id = o.id), make_array()) AS "array" FROM o"#
        );
        assert_eq!(
            rewritten("SELECT array(SELECT 'x' || v FROM unnest(o.arr) v) FROM o"),
            r#"SELECT CAST(NULL AS TEXT[]) AS "array" FROM o"#
        );
        assert_eq!(
            rewritten("SELECT array(SELECT DISTINCT name FROM t ORDER BY 1)"),
            r#"SELECT coalesce((SELECT array_agg("__array"."v") FROM (SELECT DISTINCT name FROM t ORDER BY 1) AS "__array" ("v")), make_array()) AS "array""#
        );
    }

    #[test]
    fn any_over_columns() {
        assert_eq!(
            rewritten("SELECT 'd' = any(stxkind) AS d FROM s WHERE x = ANY($1)"),
            "SELECT tributary_any_eq(stxkind, 'd') AS d FROM s WHERE x = ANY($1)"
        );
        assert_eq!(
            rewritten("SELECT pg_catalog.array_to_string(n.nspacl, E'\\n') FROM n"),
            r#"SELECT tributary_array_to_string(n.nspacl, E'\n') AS "array_to_string" FROM n"#
        );
        assert_eq!(
            parse_array_text(r#"{a,"b,c",NULL,"NULL"}"#),
            vec![
                Some("a".to_string()),
                Some("b,c".to_string()),
                None,
                Some("NULL".to_string())
            ]
        );
        assert_eq!(
            parse_array_text("1 2"),
            vec![Some("1".into()), Some("2".into())]
        );
        assert_eq!(parse_array_text("{}"), Vec::<Option<String>>::new());
        let text =
            array_text(["a=b".to_string(), "x y".to_string(), "q\"".to_string()].into_iter());
        assert_eq!(text, r#"{a=b,"x y","q\""}"#);
        assert_eq!(
            parse_array_text(&text),
            vec![Some("a=b".into()), Some("x y".into()), Some("q\"".into())]
        );
    }

    #[test]
    fn client_parser_fixes_rather_than_substitutes() {
        // psql's row-policy query, which the compatibility parser would replace by a stand-in
        // with other column names.
        let sql = "SELECT pol.polname, pol.polpermissive,
  CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,
  pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
  pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),
  CASE pol.polcmd
    WHEN 'r' THEN 'SELECT'
    WHEN 'a' THEN 'INSERT'
    WHEN 'w' THEN 'UPDATE'
    WHEN 'd' THEN 'DELETE'
    END AS cmd
FROM pg_catalog.pg_policy pol
WHERE pol.polrelid = '16384' ORDER BY 1;";
        let parsed = crate::planning::parse_for_clients(sql).unwrap().to_string();
        assert!(parsed.contains(r#"AS "array_to_string""#), "{parsed}");
        assert!(parsed.contains(r#"AS "pg_get_expr_1""#), "{parsed}");
        // Queries with nothing to fix still get the parser's substitutions and rules.
        let parsed = crate::planning::parse_for_clients(
            "SELECT c.relname FROM pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^t$'",
        )
        .unwrap()
        .to_string();
        assert!(parsed.contains("pg_catalog.pg_class"), "{parsed}");
    }

    #[test]
    fn sizes() {
        assert_eq!(pretty_size(8192), "8192 bytes");
        assert_eq!(pretty_size(16384), "16 kB");
        assert_eq!(pretty_size(10 * 1024 * 1024), "10 MB");
    }
}
