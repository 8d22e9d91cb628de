//! Federated PostgreSQL sources: `CREATE SOURCE s FROM POSTGRES CONNECTION c TABLE 'schema.t'`.
//!
//! A PostgreSQL source is read in place. Its table provider comes from
//! `datafusion-table-providers` (postgres feature) wrapped for `datafusion-federation`: the
//! engine's optimizer carries the federation rule and its physical planner the federation
//! extension planner next to Delta's (see `engine.rs`), so the largest subplan whose tables all
//! live behind one connection (same host, port, database and user) is unparsed back to SQL and
//! sent to PostgreSQL whole: projections, filters, limits, aggregates and joins between two
//! sources of the same database run there, and only their result crosses the wire, as binary
//! COPY when its columns allow (`postgres_copy`). We use these
//! crates rather than our own unparser: they are what DataFusion's ecosystem maintains for
//! exactly this, and resolve against datafusion 55.2/arrow 59 without a second copy of either.
//! Their cost is `native-tls` (OpenSSL) for `sslmode`, which builds against the system's libssl.
//!
//! Columns and types are read from PostgreSQL's catalog at `CREATE SOURCE` and stored like any
//! source's columns. Every query checks them against the remote table again (one catalog query
//! on a pooled connection): a column that went away is 42703 and a retyped one 42804, both
//! naming the source and the column, instead of rows that silently change meaning. Columns the
//! remote table gained are not read (the source keeps the columns it was created with).
//!
//! Connections are pooled per connection definition and password (a rotated `ENV` secret opens
//! a new pool); failures to connect are `SourceUnavailable` (08001) and their text never holds
//! the password: the driver's messages do not include it, and [`scrub`] removes it anyway.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex};
use tributary_catalog::ObjectClass;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::sql::unparser::dialect::PostgreSqlDialect;
use datafusion_federation::FederatedTableProviderAdaptor;
use datafusion_federation::sql::{RemoteTableRef, SQLFederationProvider, SQLTableSource};
use datafusion_table_providers::postgres::DynPostgresConnectionPool;
use datafusion_table_providers::sql::db_connection_pool::postgrespool::PostgresConnectionPool;
use datafusion_table_providers::sql::sql_provider_datafusion::SqlTable;
use datafusion_table_providers::util::secrets::to_secret_map;
use tributary_catalog::{Catalog, CatalogObject, NewObject, ObjectKind, ObjectName};

use super::postgres_copy::CopyExecutor;
use tributary_catalog::SecretValue;
use tributary_sql::error::{Error, Result};

use crate::secret::resolve_secret;

/// The `connector` option value that marks a PostgreSQL source.
pub const CONNECTOR: &str = "postgres";

/// The options `CREATE SOURCE ... FROM POSTGRES` understands.
pub const OPTION_KEYS: &[&str] = &[
    "cursor",
    "primary_key",
    "poll",
    "max_staleness",
    "description",
];

/// Whether a source reads a PostgreSQL table.
pub fn is_postgres(object: &CatalogObject) -> bool {
    crate::SourceKind::of(object) == Some(crate::SourceKind::Postgres)
}

/// A PostgreSQL source's settings, as kept in the catalog's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSourceSpec {
    pub connection: String,
    /// `schema.table` (or `table`, in the connection's search path) as the user wrote it.
    pub table: String,
    pub cursor: Option<String>,
    pub primary_key: Vec<String>,
}

impl PostgresSourceSpec {
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self> {
        let get = |key: &str| {
            options
                .get(key)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("postgres source without {key}")))
        };
        for key in options.keys() {
            let internal =
                [crate::kind::CONNECTOR_OPTION, "connection", "table"].contains(&key.as_str());
            if !internal && !OPTION_KEYS.contains(&key.as_str()) {
                return Err(Error::InvalidOption {
                    option: key.clone(),
                    message: format!(
                        "unknown option for a PostgreSQL source (expected one of: {})",
                        OPTION_KEYS.join(", ")
                    ),
                });
            }
        }
        let primary_key = options
            .get("primary_key")
            .map(|k| {
                k.split(',')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            connection: get("connection")?,
            table: get("table")?,
            cursor: options.get("cursor").cloned(),
            primary_key,
        })
    }

    /// The remote table as DataFusion names it (`schema.table`, case kept as written).
    pub fn table_reference(&self) -> TableReference {
        match self.table.split_once('.') {
            Some((schema, table)) => TableReference::partial(schema, table),
            None => TableReference::bare(self.table.as_str()),
        }
    }
}

/// The provider's table type for PostgreSQL.
type PgTable = SqlTable<
    datafusion_table_providers::postgres::conn::PostgresPooledConnection,
    &'static (dyn tokio_postgres::types::ToSql + Sync),
>;

/// A connection's pool, keyed by connection name, settings and password.
type PoolKey = u64;

static POOLS: LazyLock<Mutex<HashMap<PoolKey, Arc<PostgresConnectionPool>>>> =
    LazyLock::new(Default::default);

/// An open pool for the named connection (created and cached on first use).
pub(crate) async fn pool(catalog: &Catalog, name: &str) -> Result<Arc<PostgresConnectionPool>> {
    let connection = catalog
        .connection(name)?
        .ok_or_else(|| Error::UndefinedObject {
            kind: ObjectClass::Connection,
            name: name.to_string(),
        })?;
    let password = connection
        .password_secret
        .as_deref()
        .map(|s| resolve_secret(catalog, s))
        .transpose()?;
    let key = {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        connection.name.hash(&mut h);
        connection.options.hash(&mut h);
        password.as_ref().map(SecretValue::expose).hash(&mut h);
        h.finish()
    };
    if let Some(pool) = POOLS.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Arc::clone(pool));
    }
    let option = |k: &str| connection.options.get(k).cloned();
    let mut params: HashMap<String, String> = HashMap::new();
    for (ours, theirs) in [
        ("host", "host"),
        ("port", "port"),
        ("database", "db"),
        ("user", "user"),
    ] {
        if let Some(v) = option(ours) {
            params.insert(theirs.into(), v);
        }
    }
    params.insert(
        "sslmode".into(),
        option("sslmode").unwrap_or("prefer".into()),
    );
    params.insert(
        "application_name".into(),
        option("application_name").unwrap_or("tributary".into()),
    );
    // Pushed-down SQL compares timestamptz columns with literals the unparser writes without
    // a zone, and DataFusion computes in UTC: the session must agree, whatever the server's
    // default TimeZone is.
    params.insert("options".into(), "-c TimeZone=UTC".into());
    if let Some(p) = &password {
        params.insert("pass".into(), p.expose().to_string());
    }
    let timeout = option("connect_timeout")
        .and_then(|t| t.trim().parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(std::time::Duration::from_secs_f64);
    let connecting = PostgresConnectionPool::new(to_secret_map(params));
    let pool = match timeout {
        None => connecting.await,
        Some(limit) => tokio::time::timeout(limit, connecting).await.map_err(|_| {
            Error::SourceUnavailable(format!(
                "{}: no answer within connect_timeout ({}s)",
                cannot_connect(&connection),
                limit.as_secs_f64()
            ))
        })?,
    }
    .map_err(|e| connect_error(&connection, &e, password.as_ref()))?;
    let pool = Arc::new(pool);
    POOLS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, Arc::clone(&pool));
    Ok(pool)
}

/// `SourceUnavailable` (08001) naming the connection and where it points, with the driver's
/// innermost reason (never the password).
fn connect_error(
    connection: &tributary_catalog::Connection,
    e: &(dyn std::error::Error + 'static),
    password: Option<&SecretValue>,
) -> Error {
    let mut reason = e;
    while let Some(inner) = reason.source() {
        reason = inner;
    }
    let reason = reason.to_string();
    let reason = reason.lines().next().unwrap_or_default();
    Error::SourceUnavailable(scrub(
        &format!(
            "{}: {}",
            cannot_connect(connection),
            lowercase_first(reason)
        ),
        password,
    ))
}

/// "cannot connect to PostgreSQL through connection "c" (host:port, database "d")".
fn cannot_connect(connection: &tributary_catalog::Connection) -> String {
    let option = |k: &str| connection.options.get(k).map(String::as_str).unwrap_or("");
    format!(
        "cannot connect to PostgreSQL through connection \"{}\" ({}:{}, database \"{}\")",
        connection.name,
        option("host"),
        connection
            .options
            .get("port")
            .map(String::as_str)
            .unwrap_or("5432"),
        option("database"),
    )
}

/// `text` with every occurrence of the password replaced by `***`.
pub(crate) fn scrub(text: &str, password: Option<&SecretValue>) -> String {
    match password {
        Some(p) if !p.expose().is_empty() => text.replace(p.expose(), "***"),
        _ => text.to_string(),
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An error PostgreSQL (or the driver) raised while reading a source.
fn remote_error(
    source: &ObjectName,
    spec: &PostgresSourceSpec,
    e: impl std::fmt::Display,
) -> Error {
    Error::SourceUnavailable(format!(
        "cannot read PostgreSQL table \"{}\" of source \"{source}\": {}",
        spec.table,
        lowercase_first(e.to_string().lines().next().unwrap_or_default())
    ))
}

/// The remote table's columns as the provider types them, or 42P01 when it does not exist.
async fn remote_table(
    pool: &Arc<PostgresConnectionPool>,
    source: &ObjectName,
    spec: &PostgresSourceSpec,
) -> Result<PgTable> {
    let conn = pool
        .connect_direct()
        .await
        .map_err(|e| remote_error(source, spec, e))?;
    let exists: bool = conn
        .conn
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&spec.table])
        .await
        .map_err(|e| remote_error(source, spec, e))?
        .get(0);
    drop(conn);
    if !exists {
        return Err(Error::UndefinedObject {
            kind: ObjectClass::Relation,
            name: spec.table.clone(),
        });
    }
    let dyn_pool: Arc<DynPostgresConnectionPool> = Arc::<PostgresConnectionPool>::clone(pool);
    SqlTable::new(CONNECTOR, &dyn_pool, spec.table_reference())
        .await
        .map_err(|e| remote_error(source, spec, e))
}

/// Checks the remote columns still fit the source's stored ones and returns the schema to
/// read with: the stored columns, in their order, typed as the remote table types them now.
fn check_shape(
    object: &CatalogObject,
    spec: &PostgresSourceSpec,
    live: &Schema,
) -> Result<SchemaRef> {
    let mut fields = Vec::with_capacity(object.columns.len());
    for column in &object.columns {
        let Ok(field) = live.field_with_name(&column.name) else {
            return Err(Error::UndefinedColumn(format!(
                "column \"{}\" of source \"{}\" no longer exists in PostgreSQL table \"{}\"",
                column.name, object.name, spec.table
            )));
        };
        let now = tributary_sql::types::pg_type_name(field.data_type());
        if now != column.data_type {
            return Err(Error::SchemaDrift(format!(
                "column \"{}\" of source \"{}\" changed type in PostgreSQL table \"{}\": \
                 it was {} and is now {}",
                column.name, object.name, spec.table, column.data_type, now
            )));
        }
        fields.push(field.clone());
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The federated provider for a PostgreSQL source, as readers see it now.
pub async fn provider(catalog: &Catalog, object: &CatalogObject) -> Result<Arc<dyn TableProvider>> {
    let spec = PostgresSourceSpec::from_options(&object.options)?;
    let pool = pool(catalog, &spec.connection).await?;
    let live = remote_table(&pool, &object.name, &spec).await?;
    let schema = check_shape(object, &spec, &live.schema())?;
    let dyn_pool: Arc<DynPostgresConnectionPool> = Arc::<PostgresConnectionPool>::clone(&pool);
    let table = Arc::new(
        SqlTable::new_with_schema(
            CONNECTOR,
            &dyn_pool,
            Arc::clone(&schema),
            spec.table_reference(),
        )
        .with_dialect(Arc::new(PostgreSqlDialect {})),
    );
    // The provider's own federation, with its queries run by binary COPY.
    let remote = Arc::clone(&table);
    let executor = CopyExecutor::new(remote, pool, object.name.to_string());
    let federation = Arc::new(SQLFederationProvider::new(Arc::new(executor)));
    let source = SQLTableSource::new_with_schema(
        federation,
        RemoteTableRef::from(spec.table_reference()),
        schema,
    );
    Ok(Arc::new(FederatedTableProviderAdaptor::new_with_provider(
        Arc::new(source),
        table,
    )))
}

/// `CREATE SOURCE name FROM POSTGRES CONNECTION c TABLE 'schema.table' [WITH (...)]`: checks
/// the connection and the table, and stores the table's columns as PostgreSQL types them.
pub async fn create(
    catalog: &Catalog,
    name: ObjectName,
    source: tributary_sql::dialect::CreatePostgresSource,
    text: &str,
) -> Result<()> {
    let mut options = source.options.clone();
    options.insert(
        crate::kind::CONNECTOR_OPTION.into(),
        crate::SourceKind::Postgres.as_str().into(),
    );
    options.insert("connection".into(), source.connection.clone());
    options.insert("table".into(), source.table.clone());
    let spec = PostgresSourceSpec::from_options(&options)?;
    tributary_sql::options::max_staleness(&options)?;
    if let Some(poll) = options.get("poll") {
        tributary_sql::options::parse_duration("poll", poll)?;
    }
    let pool = pool(catalog, &spec.connection).await?;
    let table = remote_table(&pool, &name, &spec).await?;
    let schema = table.schema();
    if schema.fields().is_empty() {
        return Err(Error::bad_input(format!(
            "PostgreSQL table \"{}\" of source \"{name}\" has no columns",
            spec.table
        )));
    }
    let named = |option: &str, column: &str| -> Result<()> {
        if schema.field_with_name(column).is_err() {
            return Err(Error::InvalidOption {
                option: option.into(),
                message: format!(
                    "\"{column}\" is not a column of PostgreSQL table \"{}\"",
                    spec.table
                ),
            });
        }
        Ok(())
    };
    if let Some(cursor) = &spec.cursor {
        named("cursor", cursor)?;
    }
    for key in &spec.primary_key {
        named("primary_key", key)?;
    }
    if !spec.primary_key.is_empty() && spec.cursor.is_none() {
        return Err(Error::InvalidOption {
            option: "primary_key".into(),
            message: "primary_key tracks changed rows through the cursor: set cursor too".into(),
        });
    }
    let description = options.get("description").cloned();
    catalog.create_object(
        &NewObject {
            name,
            kind: ObjectKind::Source,
            sql: text.to_string(),
            query: None,
            default_schema: None,
            options,
            columns: tributary_sql::types::columns_of_schema(&schema),
            location: None,
            comment: description,
        },
        &[],
    )?;
    Ok(())
}

/// The engine's physical planner: DataFusion's, with the extension planners for Delta's
/// write nodes, for federated subplans and for clustered writes.
#[derive(Debug)]
struct Planner;

#[async_trait::async_trait]
impl datafusion::execution::context::QueryPlanner for Planner {
    async fn create_physical_plan(
        &self,
        logical_plan: &datafusion::logical_expr::LogicalPlan,
        session_state: &dyn datafusion::catalog::Session,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
        let planner = DefaultPhysicalPlanner::with_extension_planners(vec![
            deltalake::delta_datafusion::planner::DeltaExtensionPlanner::new(),
            Arc::new(datafusion_federation::FederatedPlanner::new()),
            Arc::new(tributary_storage::cluster::ClusterPlanner),
        ]);
        let plan = planner
            .create_physical_plan(logical_plan, session_state)
            .await?;
        crate::counting::count_federated(plan, session_state.config())
    }
}

pub fn query_planner() -> Arc<dyn datafusion::execution::context::QueryPlanner + Send + Sync> {
    Arc::new(Planner)
}

mod cursor;

pub use cursor::{change_since, cursor_rows, filtered, newest_cursor_time};
pub use tributary_storage::bookmarks::CursorState;

/// DataFusion's optimizer rules with federation last, wrapped so it never federates across an
/// extension node. Last (`datafusion-federation` puts it right after scalar subqueries become
/// joins) because the unparser cannot always turn stacked projections into valid SQL (a
/// refresh casts its query's result to the model's stored types), and by the end of a pass
/// DataFusion has merged them and pushed filters and limits into place. Delta's writes wrap
/// their input in `MetricObserver` nodes, which have no SQL form, so federation starts below.
pub fn optimizer_rules() -> Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> {
    let mut rules = datafusion::optimizer::Optimizer::new().rules;
    rules.push(Arc::new(FederationBelowExtensions(
        datafusion_federation::FederationOptimizerRule::new(),
    )));
    rules
}

#[derive(Debug)]
struct FederationBelowExtensions(datafusion_federation::FederationOptimizerRule);

impl datafusion::optimizer::OptimizerRule for FederationBelowExtensions {
    fn name(&self) -> &str {
        "federation_below_extensions"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        config: &dyn datafusion::optimizer::OptimizerConfig,
    ) -> datafusion::error::Result<
        datafusion::common::tree_node::Transformed<datafusion::logical_expr::LogicalPlan>,
    > {
        use datafusion::common::tree_node::TreeNode;
        use datafusion::logical_expr::LogicalPlan;
        let has_extension = plan.exists(|p| Ok(matches!(p, LogicalPlan::Extension(_))))?;
        if !has_extension {
            return self.0.rewrite(plan, config);
        }
        match plan {
            LogicalPlan::Extension(ext) => {
                let inputs = ext
                    .node
                    .inputs()
                    .into_iter()
                    .map(|i| self.rewrite(i.clone(), config).map(|t| t.data))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                let node = ext
                    .node
                    .with_exprs_and_inputs(ext.node.expressions(), inputs)?;
                Ok(datafusion::common::tree_node::Transformed::yes(
                    LogicalPlan::Extension(datafusion::logical_expr::Extension { node }),
                ))
            }
            other => other.map_children(|child| self.rewrite(child, config)),
        }
    }
}
