//! One connection's handlers: simple and extended query protocol and COPY FROM STDIN, all
//! driving the connection's engine session. Errors become ErrorResponses with SQLSTATEs and
//! leave the session usable.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use futures::Sink;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ErrorHandler, PgWireServerHandlers, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::types::format::FormatOptions;
use tokio::sync::Mutex;
use tributary_engine::copy::CopyIn;
use tributary_engine::{Engine, Output, Prepared, Session};

use super::auth::{AuthConfig, Startup};
use super::encode::{self, pg_error};
use crate::metrics::{QueryTimer, timed_stream};

/// The handlers of one connection (pgwire asks for each once per connection).
pub(super) struct ConnectionHandlers {
    conn: Arc<Connection>,
    startup: Arc<Startup>,
}

impl ConnectionHandlers {
    pub(super) fn new(engine: Engine, auth: Arc<AuthConfig>, connections_full: bool) -> Self {
        Self {
            conn: Arc::new(Connection {
                shared: Arc::new(Shared {
                    engine,
                    session: Mutex::new(None),
                    copy: Mutex::new(None),
                }),
            }),
            startup: Arc::new(Startup::new(auth, connections_full)),
        }
    }
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.conn)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.conn)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::clone(&self.conn)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(pgwire::api::cancel::DefaultCancelHandler::new(
            super::auth::CONNECTIONS.clone(),
        ))
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, _client: &C, error: &mut PgWireError) {
        if let PgWireError::UserError(info) = error {
            tracing::debug!(code = %info.code, message = %info.message, "statement failed");
        } else {
            tracing::debug!(error = %error, "protocol error");
        }
    }
}

/// Rows received so far for a pending COPY FROM STDIN.
struct PendingCopy {
    copy: CopyIn,
    data: Vec<u8>,
    /// The COPY statement's timer: it completes when the data is loaded.
    timer: QueryTimer,
}

/// The most COPY data buffered for one statement before it is refused.
const MAX_COPY_BYTES: usize = 1 << 30;

/// State shared by a connection's handlers and its statement parser.
pub(super) struct Shared {
    engine: Engine,
    session: Mutex<Option<Session>>,
    copy: Mutex<Option<PendingCopy>>,
}

pub(super) struct Connection {
    shared: Arc<Shared>,
}

impl std::ops::Deref for Connection {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Shared {
    async fn session<C: ClientInfo>(
        &self,
        client: &C,
    ) -> tokio::sync::MappedMutexGuard<'_, Session> {
        let guard = self.session.lock().await;
        tokio::sync::MutexGuard::map(guard, |session| {
            session.get_or_insert_with(|| {
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                self.engine.session(&user)
            })
        })
    }

    /// Encodes a statement's output; `timer` completes once the statement has (when its rows
    /// are streamed, or its COPY data loaded).
    async fn respond(
        &self,
        output: Output,
        format: &Format,
        options: Arc<FormatOptions>,
        timer: QueryTimer,
    ) -> PgWireResult<Response> {
        let output = match output {
            Output::CopyIn(copy) => {
                *self.copy.lock().await = Some(PendingCopy {
                    copy: copy.clone(),
                    data: Vec::new(),
                    timer,
                });
                Output::CopyIn(copy)
            }
            Output::Rows {
                schema,
                stream,
                tag,
            } => Output::Rows {
                schema,
                stream: timed_stream(stream, timer),
                tag,
            },
            Output::CopyOut {
                schema,
                stream,
                format,
            } => Output::CopyOut {
                schema,
                stream: timed_stream(stream, timer),
                format,
            },
            Output::Command(tag) => {
                timer.succeed();
                Output::Command(tag)
            }
        };
        encode::response(output, format, Some(options))
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        ensure_authenticated(client)?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let mut session = self.session(client).await;
        let statements = match session.parse(query) {
            Ok(s) => s,
            Err(e) => {
                QueryTimer::start().fail();
                return Ok(vec![Response::Error(Box::new(
                    super::sqlstate::error_info(&e),
                ))]);
            }
        };
        let mut responses = Vec::new();
        for prepared in statements {
            let timer = QueryTimer::start();
            match with_timeout(
                session.statement_timeout(),
                session.execute(&prepared, None),
            )
            .await
            {
                Ok(output) => {
                    let is_copy_in = matches!(output, Output::CopyIn(_));
                    responses.push(
                        self.respond(output, &Format::UnifiedText, Arc::clone(&options), timer)
                            .await?,
                    );
                    if is_copy_in {
                        break;
                    }
                }
                Err(e) => {
                    timer.fail();
                    responses.push(Response::Error(Box::new(super::sqlstate::error_info(&e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// A statement prepared with Parse: parsed once, planned for its types when it is a query.
#[derive(Clone, Debug)]
pub(super) struct PreparedStatement {
    prepared: Prepared,
    parameter_types: Vec<Option<DataType>>,
    schema: Option<SchemaRef>,
}

pub(super) struct Parser {
    conn: Arc<Shared>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = PreparedStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        ensure_authenticated(client)?;
        // A statement that fails to parse or plan never executes: count it as failed here.
        let timer = QueryTimer::start();
        let session = self.conn.session(client).await;
        let mut prepared = session.prepare(sql).map_err(|e| pg_error(&e))?;
        if prepared.statement.is_none() {
            timer.discard();
            return Ok(None);
        }
        let (parameter_types, schema) = match session
            .describe(&mut prepared)
            .await
            .map_err(|e| pg_error(&e))?
        {
            Some(described) => (described.parameter_types, described.schema),
            None => (Vec::new(), None),
        };
        timer.discard();
        Ok(Some(PreparedStatement {
            prepared,
            parameter_types,
            schema,
        }))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        stmt.parameter_types
            .iter()
            .map(|t| match t {
                Some(t) => arrow_pg::datatypes::into_pg_type(t),
                None => Ok(Type::UNKNOWN),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        result_fields(stmt, column_format.unwrap_or(&Format::UnifiedText))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = PreparedStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(Parser {
            conn: Arc::clone(&self.shared),
        })
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = &target.statement;
        let declared = &target.parameter_types;
        let count = declared.len().max(stmt.parameter_types.len());
        let params = (0..count)
            .map(|i| {
                if let Some(Some(t)) = declared.get(i) {
                    return Ok(t.clone());
                }
                match stmt.parameter_types.get(i) {
                    Some(Some(t)) => arrow_pg::datatypes::into_pg_type(t),
                    _ => Ok(Type::UNKNOWN),
                }
            })
            .collect::<PgWireResult<Vec<_>>>()?;
        let fields = result_fields(stmt, &Format::UnifiedText)?;
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = result_fields(&target.statement.statement, &target.result_column_format)?;
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        ensure_authenticated(client)?;
        // Dropped unfinished (any early return below) counts the statement as an error.
        let timer = QueryTimer::start();
        let stmt = &portal.statement.statement;
        if portal.parameter_len() != stmt.parameter_types.len() {
            return Err(PgWireError::UserError(Box::new(
                pgwire::error::ErrorInfo::new(
                    "ERROR".into(),
                    "08P01".into(),
                    format!(
                        "bind message supplies {} parameters, but prepared statement requires {}",
                        portal.parameter_len(),
                        stmt.parameter_types.len()
                    ),
                ),
            )));
        }
        let params = if stmt.parameter_types.is_empty() {
            None
        } else {
            let inferred: Vec<Option<&DataType>> =
                stmt.parameter_types.iter().map(|t| t.as_ref()).collect();
            Some(arrow_pg::datatypes::df::deserialize_parameters(
                portal, &inferred,
            )?)
        };
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let mut session = self.session(client).await;
        let timeout = session.statement_timeout();
        let output = with_timeout(timeout, session.execute(&stmt.prepared, params))
            .await
            .map_err(|e| pg_error(&e))?;
        drop(session);
        self.respond(output, &portal.result_column_format, options, timer)
            .await
    }
}

#[async_trait]
impl CopyHandler for Connection {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        ensure_authenticated(client)?;
        let mut pending = self.copy.lock().await;
        let Some(p) = pending.as_mut() else {
            return Err(protocol_error("copy data received outside of COPY"));
        };
        if p.data.len() + copy_data.data.len() > MAX_COPY_BYTES {
            *pending = None;
            return Err(PgWireError::UserError(Box::new(
                pgwire::error::ErrorInfo::new(
                    "ERROR".into(),
                    "54000".into(),
                    "COPY data exceeds the 1 GiB limit of one statement; split the load".into(),
                ),
            )));
        }
        p.data.extend_from_slice(&copy_data.data);
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        let Some(pending) = self.copy.lock().await.take() else {
            return Err(protocol_error("COPY done received outside of COPY"));
        };
        let mut session = self.session(client).await;
        let rows = session
            .copy_in(&pending.copy, &pending.data)
            .await
            .map_err(|e| pg_error(&e))?;
        drop(session);
        pending.timer.succeed();
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(rows as usize).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        *self.copy.lock().await = None;
        PgWireError::UserError(Box::new(pgwire::error::ErrorInfo::new(
            "ERROR".into(),
            "57014".into(),
            format!("COPY from stdin failed: {}", fail.message),
        )))
    }
}

/// Runs a statement under the session's `statement_timeout` (dropping it on expiry, which
/// cancels it as a CancelRequest would).
async fn with_timeout<T>(
    timeout: Option<std::time::Duration>,
    work: impl std::future::Future<Output = tributary_engine::Result<T>>,
) -> tributary_engine::Result<T> {
    match timeout {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(tributary_engine::Error::StatementTimeout)),
        None => work.await,
    }
}

/// The result columns of a prepared statement in the given formats (none for statements that
/// return no rows).
fn result_fields(stmt: &PreparedStatement, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    match &stmt.schema {
        Some(schema) => arrow_pg::datatypes::arrow_schema_to_pg_fields(schema, format, None),
        None => Ok(Vec::new()),
    }
}

fn ensure_authenticated<C: ClientInfo>(client: &C) -> PgWireResult<()> {
    match client
        .session_extensions()
        .get::<super::auth::Authenticated>()
    {
        Some(_) => Ok(()),
        None => Err(super::auth::not_authenticated()),
    }
}

fn protocol_error(message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(pgwire::error::ErrorInfo::new(
        "ERROR".into(),
        "08P01".into(),
        message.into(),
    )))
}
