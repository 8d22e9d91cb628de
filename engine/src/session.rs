//! A connected user's session: its DataFusion context, settings and the dispatch of each
//! statement to queries, DDL, DML or refreshes.

use std::collections::BTreeMap;
use std::sync::Arc;
use tributary_catalog::ObjectClass;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast;

use crate::context::StatementContext;
use crate::dialect::{self, Statement};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::planning;

/// What a statement produced.
pub enum Output {
    /// Rows to stream to the client; `tag` is the command tag verb (`SELECT`).
    Rows {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        tag: String,
    },
    /// A command that completed with this tag (`CREATE MODEL`, `INSERT 0 3`).
    Command(String),
    /// `COPY ... FROM STDIN`: the client sends data next, then calls [`Session::copy_in`].
    CopyIn(crate::copy::CopyIn),
    /// `COPY ... TO STDOUT`: rows to send in COPY format.
    CopyOut {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        format: crate::copy::CopyFormat,
    },
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Rows { tag, .. } => write!(f, "Rows({tag})"),
            Output::Command(tag) => write!(f, "Command({tag})"),
            Output::CopyIn(c) => write!(f, "CopyIn({})", c.table),
            Output::CopyOut { .. } => write!(f, "CopyOut"),
        }
    }
}

/// What Describe reports for a prepared statement.
#[derive(Debug, Clone)]
pub struct Described {
    /// Parameter types by position (`$1` first); `None` where they cannot be inferred.
    pub parameter_types: Vec<Option<datafusion::arrow::datatypes::DataType>>,
    /// The result columns, for statements that return rows.
    pub schema: Option<SchemaRef>,
}

/// A statement parsed once (extended protocol) and executed later, maybe many times.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub text: String,
    pub statement: Option<Statement>,
    /// The query's plan from Describe, for Execute to reuse instead of planning again.
    planned: Option<Planned>,
}

/// A query plan made by Describe. It holds the published versions of the Delta tables it
/// reads, so it stays current exactly as long as the catalog (where publications, DDL and
/// grants are written) and the session's search path are unchanged.
#[derive(Debug, Clone)]
struct Planned {
    plan: LogicalPlan,
    catalog_changes: u64,
    default_schema: String,
}

pub struct Session {
    pub(crate) engine: Engine,
    pub(crate) ctx: SessionContext,
    pub user: String,
    /// Settings changed with SET, reported by SHOW.
    settings: BTreeMap<String, String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(engine: Engine, user: &str) -> Self {
        let ctx = engine.new_context();
        Self {
            engine,
            ctx,
            user: user.to_string(),
            settings: BTreeMap::new(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What a statement handler of this session works with.
    fn cx(&self) -> StatementContext<'_> {
        StatementContext::new(&self.engine, &self.ctx, &self.user)
    }

    /// Loads the data of a `COPY ... FROM STDIN` into its table as one commit.
    pub async fn copy_in(&mut self, copy: &crate::copy::CopyIn, data: &[u8]) -> Result<u64> {
        crate::copy::copy_in(&self.cx(), copy, data).await
    }

    /// The schema unqualified names resolve to (first of `search_path`).
    pub fn current_schema(&self) -> String {
        self.cx().current_schema()
    }

    /// `REFRESH SOURCE name`: polls an HTTP source now.
    async fn refresh_source(&mut self, name: &ast::ObjectName) -> Result<Output> {
        let object = self.cx().resolve(name, ObjectClass::Source)?;
        if !crate::sources::http::is_http(&object) {
            return Err(Error::WrongObjectType(format!(
                "\"{}\" is not an http source (only http sources are polled; file sources are \
                 read in place)",
                object.name
            )));
        }
        self.engine.poll_source(&object, "manual").await?;
        Ok(Output::Command("REFRESH SOURCE".into()))
    }

    /// Splits and parses a (possibly multi-statement) query string.
    pub fn parse(&self, sql: &str) -> Result<Vec<Prepared>> {
        dialect::split_statements(sql)?
            .into_iter()
            .map(|text| self.prepare(&text))
            .collect()
    }

    /// Parses one statement.
    pub fn prepare(&self, text: &str) -> Result<Prepared> {
        if text.trim().is_empty() {
            return Ok(Prepared {
                text: String::new(),
                statement: None,
                planned: None,
            });
        }
        let statement = match dialect::parse_statement(text) {
            // Client catalog queries that DataFusion cannot plan as written get whole-query
            // substitutions; everything else gets the same rewrites.
            Ok(Statement::Sql(stmt)) => Statement::Sql(Box::new(
                planning::parse_for_clients(text)
                    .unwrap_or_else(|| planning::rewrite_for_clients(*stmt)),
            )),
            Ok(other) => other,
            Err(e) => return Err(e.into()),
        };
        Ok(Prepared {
            text: text.to_string(),
            statement: Some(statement),
            planned: None,
        })
    }

    /// Plans a prepared statement to learn its parameter types and, for queries, its result
    /// columns (Describe); a query over Delta tables keeps its plan for Execute. Statements
    /// other than queries and INSERT are not planned ahead.
    pub async fn describe(&self, prepared: &mut Prepared) -> Result<Option<Described>> {
        match &prepared.statement {
            Some(Statement::Sql(stmt))
                if is_query(stmt) || matches!(**stmt, ast::Statement::Insert(_)) =>
            {
                // Read before planning: a write during planning must invalidate the plan.
                let catalog_changes = self.engine.catalog().change_count();
                let plan = planning::plan_statement(&self.ctx.state(), (**stmt).clone()).await?;
                if matches!(**stmt, ast::Statement::Query(_)) && reads_only_delta_tables(&plan) {
                    prepared.planned = Some(Planned {
                        plan: plan.clone(),
                        catalog_changes,
                        default_schema: self.current_schema(),
                    });
                }
                let mut types: Vec<(usize, Option<datafusion::arrow::datatypes::DataType>)> = plan
                    .get_parameter_types()?
                    .into_iter()
                    .filter_map(|(name, t)| {
                        name.trim_start_matches('$').parse().ok().map(|i| (i, t))
                    })
                    .collect();
                types.sort_by_key(|(i, _)| *i);
                let mut parameter_types = vec![None; types.last().map_or(0, |(i, _)| *i)];
                for (i, t) in types {
                    parameter_types[i - 1] = t;
                }
                let schema = is_query(stmt).then(|| Arc::clone(plan.schema().inner()));
                Ok(Some(Described {
                    parameter_types,
                    schema,
                }))
            }
            // Statements of Tributary's own that return rows of a fixed shape.
            Some(Statement::RunJob(_)) => Ok(Some(Described {
                parameter_types: Vec::new(),
                schema: Some(crate::jobs::run_result_schema()),
            })),
            _ => Ok(None),
        }
    }

    /// Runs every statement of a simple query, stopping at the first error.
    pub async fn execute_all(&mut self, sql: &str) -> Result<Vec<Output>> {
        let mut outputs = Vec::new();
        for prepared in self.parse(sql)? {
            outputs.push(self.execute(&prepared, None).await?);
        }
        Ok(outputs)
    }

    /// Executes one prepared statement with optional bound parameters.
    pub async fn execute(
        &mut self,
        prepared: &Prepared,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        let Some(statement) = prepared.statement.clone() else {
            return Ok(Output::Command(String::new()));
        };
        match statement {
            Statement::Sql(_) if let Some(plan) = self.kept_plan(prepared) => {
                tracing::debug!("query runs the plan kept from describe");
                self.cx()
                    .run_query(plan, params, std::time::Instant::now())
                    .await
            }
            Statement::Sql(stmt) => self.execute_sql(*stmt, &prepared.text, params).await,
            Statement::CreateSource(s) => {
                crate::ddl::create_source(&self.cx(), s, &prepared.text).await
            }
            Statement::CreateModel(m) => {
                crate::ddl::create_model(&self.cx(), m, &prepared.text).await
            }
            Statement::Refresh(r) => {
                crate::refresh_statements::refresh_statement(&self.cx(), r).await
            }
            Statement::RefreshAll => crate::refresh_statements::refresh_all(&self.cx()).await,
            Statement::RefreshSource(name) => self.refresh_source(&name).await,
            Statement::Drop(d) => crate::ddl::drop_objects(&self.cx(), d).await,
            Statement::Show(kind) => crate::ddl::show_objects(&self.cx(), kind).await,
            Statement::ShowLineage { name, direction } => {
                let object = self.cx().resolve(&name, ObjectClass::Relation)?;
                let batch = crate::lineage::show::show_lineage(
                    self.engine.catalog(),
                    object.id,
                    direction,
                )?;
                crate::ddl::rows_output(batch)
            }
            Statement::ExplainRefresh(name) => {
                crate::refresh_statements::explain(&self.cx(), &name).await
            }
            Statement::CreateSecret(c) => crate::secrets::create_secret(&self.cx(), c),
            Statement::CreateConnection(c) => crate::secrets::create_connection(&self.cx(), c),
            Statement::CreatePostgresSource(s) => {
                crate::ddl::create_postgres_source(&self.cx(), s, &prepared.text).await
            }
            Statement::DropGlobal(d) => crate::secrets::drop_global(&self.cx(), d).await,
            Statement::CreateTest(t) => {
                crate::test_statements::create_test(&self.cx(), t, &prepared.text).await
            }
            Statement::DropTests(d) => crate::test_statements::drop_tests(&self.cx(), d),
            Statement::RunTests(on) => crate::test_statements::run_tests(&self.cx(), on).await,
            Statement::ShowTests => crate::test_statements::show_tests(&self.cx()),
            Statement::CreateJob(j) => crate::jobs::create_job(&self.cx(), j, &prepared.text).await,
            Statement::DropJobs(d) => crate::jobs::drop_jobs(&self.cx(), d),
            Statement::RunJob(r) => crate::jobs::run_job_statement(&self.cx(), r).await,
            Statement::CommentOn { name, comment } => crate::ddl::comment_on(
                &self.cx(),
                ast::CommentObject::Table,
                &name,
                comment.as_deref(),
            ),
        }
    }

    async fn execute_sql(
        &mut self,
        stmt: ast::Statement,
        text: &str,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        use ast::Statement as S;
        match stmt {
            S::Query(_) | S::Explain { .. } => self.cx().query(stmt, params).await,
            S::CreateSchema {
                schema_name,
                if_not_exists,
                ..
            } => crate::ddl::create_schema(&self.cx(), &schema_name, if_not_exists),
            S::CreateTable(create) => crate::ddl::create_table(&self.cx(), create, text).await,
            S::CreateView(view) => crate::ddl::create_view(&self.cx(), view, text).await,
            S::Drop {
                object_type: ast::ObjectType::Schema,
                if_exists,
                names,
                cascade,
                ..
            } => crate::ddl::drop_schemas(&self.cx(), &names, if_exists, cascade).await,
            S::Insert(insert) => crate::dml::insert(&self.cx(), insert, params).await,
            S::Update(update) => crate::dml::update(&self.cx(), update).await,
            S::Delete(delete) => crate::dml::delete(&self.cx(), delete).await,
            S::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                values: _,
            } => {
                crate::copy::copy_statement(&self.cx(), source, to, target, options, legacy_options)
                    .await
            }
            S::Set(set) => self.set(set),
            S::ShowVariable { variable } => self.show_variable(&variable),
            S::StartTransaction { .. } => Ok(Output::Command("BEGIN".into())),
            S::Commit { .. } => Ok(Output::Command("COMMIT".into())),
            S::Rollback { .. } => Ok(Output::Command("ROLLBACK".into())),
            S::Discard { .. } => Ok(Output::Command("DISCARD ALL".into())),
            S::Deallocate { .. } => Ok(Output::Command("DEALLOCATE".into())),
            S::Comment {
                object_type,
                object_name,
                comment,
                ..
            } => crate::ddl::comment_on(&self.cx(), object_type, &object_name, comment.as_deref()),
            other => Err(Error::NotSupported(format!(
                "statement \"{}\"",
                first_words(&other.to_string())
            ))),
        }
    }

    /// The plan Describe kept for this statement, while it is still current.
    fn kept_plan(&self, prepared: &Prepared) -> Option<LogicalPlan> {
        let planned = prepared.planned.as_ref()?;
        (planned.catalog_changes == self.engine.catalog().change_count()
            && planned.default_schema == self.current_schema())
        .then(|| planned.plan.clone())
    }

    fn set(&mut self, set: ast::Set) -> Result<Output> {
        match set {
            ast::Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string().to_lowercase();
                let value = values
                    .iter()
                    .map(|v| match v {
                        ast::Expr::Value(v) => match &v.value {
                            ast::Value::SingleQuotedString(s) => s.clone(),
                            other => other.to_string(),
                        },
                        ast::Expr::Identifier(i) => i.value.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                if name == "search_path" {
                    let first = value
                        .split(',')
                        .map(|s| s.trim().trim_matches('"'))
                        .find(|s| !s.is_empty() && *s != "$user" && *s != "pg_catalog")
                        .unwrap_or("public")
                        .to_string();
                    self.ctx
                        .state_ref()
                        .write()
                        .config_mut()
                        .options_mut()
                        .catalog
                        .default_schema = first.clone();
                    self.ctx.register_udf(current_schema_udf(first));
                }
                self.settings.insert(name, value);
                Ok(Output::Command("SET".into()))
            }
            ast::Set::SetTimeZone { value, .. } => {
                self.settings.insert("timezone".into(), value.to_string());
                Ok(Output::Command("SET".into()))
            }
            _ => Ok(Output::Command("SET".into())),
        }
    }

    fn show_variable(&self, variable: &[ast::Ident]) -> Result<Output> {
        let name = variable
            .iter()
            .map(|i| i.value.to_lowercase())
            .collect::<Vec<_>>()
            .join(" ");
        let value = self.setting(&name).ok_or_else(|| Error::UndefinedObject {
            kind: ObjectClass::Setting,
            name: name.clone(),
        })?;
        crate::ddl::single_text_row(&name.replace(' ', "_"), &value)
    }

    /// `statement_timeout` as a duration (`None` when 0, the default). PostgreSQL's units:
    /// a bare number is milliseconds; `ms`, `s`, `min`, `h` suffixes are accepted.
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        let value = self
            .settings
            .get("statement_timeout")?
            .trim()
            .to_lowercase();
        let split = value
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(value.len());
        let (number, unit) = value.split_at(split);
        let number: f64 = number.parse().ok()?;
        let ms = match unit.trim() {
            "" | "ms" => number,
            "s" => number * 1000.0,
            "min" => number * 60_000.0,
            "h" => number * 3_600_000.0,
            _ => return None,
        };
        (ms > 0.0).then(|| std::time::Duration::from_secs_f64(ms / 1000.0))
    }

    /// A setting's current value (SET by the session, or the server default).
    pub fn setting(&self, name: &str) -> Option<String> {
        if let Some(v) = self.settings.get(name) {
            return Some(v.clone());
        }
        Some(
            match name {
                "server_version" => crate::SERVER_VERSION,
                "server_encoding" | "client_encoding" => "UTF8",
                "datestyle" => "ISO, MDY",
                "timezone" | "time zone" => "UTC",
                "standard_conforming_strings" => "on",
                "integer_datetimes" => "on",
                "transaction isolation level" | "transaction_isolation" => "read committed",
                "search_path" => "\"$user\", public",
                "max_identifier_length" => "63",
                "lc_collate" | "lc_ctype" => "C.UTF-8",
                "statement_timeout" => "0",
                "is_superuser" => "on",
                "application_name" => "",
                _ => return None,
            }
            .to_string(),
        )
    }
}

/// `current_schema()` answering the first schema of this session's `search_path`.
fn current_schema_udf(schema: String) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use datafusion::scalar::ScalarValue;
    create_udf(
        "current_schema",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        std::sync::Arc::new(move |_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                schema.clone(),
            ))))
        }),
    )
}

/// Whether every table the plan reads is a Delta table (a snapshot of a published version):
/// system tables, views and sources read elsewhere are resolved anew by each planning.
fn reads_only_delta_tables(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut only = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let delta = datafusion::datasource::source_as_provider(&scan.source).is_ok_and(|p| {
                let any: &dyn std::any::Any = p.as_ref();
                any.is::<crate::storage::scan::DeltaScan>()
            });
            if !delta {
                only = false;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    only
}

fn is_query(stmt: &ast::Statement) -> bool {
    matches!(
        stmt,
        ast::Statement::Query(_) | ast::Statement::Explain { .. }
    )
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}
