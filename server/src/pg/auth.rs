//! Start-up and authentication: the database name is checked (3D000), the connection limit
//! enforced (53300), and the user authenticated with SCRAM-SHA-256, or trusted when the server
//! listens on loopback only (the quickstart default).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, LoginInfo, Password, ServerParameterProvider, StartupHandler,
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionManager, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

/// SCRAM iteration count for stored verifiers.
const SCRAM_ITERATIONS: usize = 4096;

/// One generator for every connection so backend pids are unique.
static PIDS: LazyLock<Arc<RandomPidSecretKeyGenerator>> =
    LazyLock::new(|| Arc::new(RandomPidSecretKeyGenerator::default()));

/// Live connections by (pid, secret key), so a CancelRequest reaches its connection.
pub(super) static CONNECTIONS: LazyLock<Arc<ConnectionManager>> =
    LazyLock::new(|| Arc::new(ConnectionManager::new()));

/// Set on a connection once it has authenticated. pgwire keeps reading a connection after a
/// FATAL authentication error, so every handler checks this marker before doing anything.
pub(super) struct Authenticated;

/// The error for a message on a connection that has not authenticated.
pub(super) fn not_authenticated() -> PgWireError {
    fatal("28000", "the connection is not authenticated".into())
}

/// How clients authenticate.
#[derive(Debug)]
pub(crate) struct AuthConfig {
    /// Accept any user without a password (only allowed on loopback).
    pub trust: bool,
    pub database: String,
    pub superuser: String,
    /// Salt and SCRAM salted password of the superuser.
    salted: Option<(Vec<u8>, Vec<u8>)>,
}

impl AuthConfig {
    pub(crate) fn new(
        trust: bool,
        database: &str,
        superuser: &str,
        password: Option<&str>,
    ) -> Self {
        let salted = password.map(|pw| {
            let salt: [u8; 16] = rand_salt();
            (
                salt.to_vec(),
                gen_salted_password(pw, &salt, SCRAM_ITERATIONS),
            )
        });
        Self {
            trust,
            database: database.to_string(),
            superuser: superuser.to_string(),
            salted,
        }
    }
}

fn rand_salt() -> [u8; 16] {
    let a = uuid::Uuid::new_v4();
    *a.as_bytes()
}

/// Parameters reported at start-up, as PostgreSQL 15 reports them.
#[derive(Debug, Default)]
pub(super) struct Params;

impl ServerParameterProvider for Params {
    fn server_parameters<C: ClientInfo>(&self, client: &C) -> Option<HashMap<String, String>> {
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        let app = client
            .metadata()
            .get("application_name")
            .cloned()
            .unwrap_or_default();
        Some(HashMap::from([
            (
                "server_version".into(),
                tributary_engine::SERVER_VERSION.into(),
            ),
            ("server_encoding".into(), "UTF8".into()),
            ("client_encoding".into(), "UTF8".into()),
            ("DateStyle".into(), "ISO, MDY".into()),
            ("IntervalStyle".into(), "postgres".into()),
            ("TimeZone".into(), "UTC".into()),
            ("integer_datetimes".into(), "on".into()),
            ("standard_conforming_strings".into(), "on".into()),
            ("is_superuser".into(), "on".into()),
            ("session_authorization".into(), user),
            ("application_name".into(), app),
            ("default_transaction_read_only".into(), "off".into()),
            ("in_hot_standby".into(), "off".into()),
        ]))
    }
}

#[derive(Debug)]
struct Verifiers {
    auth: Arc<AuthConfig>,
}

#[async_trait]
impl AuthSource for Verifiers {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match &self.auth.salted {
            Some((salt, salted)) if user == self.auth.superuser => {
                Ok(Password::new(Some(salt.clone()), salted.clone()))
            }
            _ => Err(PgWireError::InvalidPassword(user.to_string())),
        }
    }
}

/// The start-up handler of one connection.
pub(super) struct Startup {
    auth: Arc<AuthConfig>,
    sasl: SASLAuthStartupHandler<Params>,
    connections_full: bool,
}

impl Startup {
    pub(super) fn new(auth: Arc<AuthConfig>, connections_full: bool) -> Self {
        let mut scram = ScramAuth::new(Arc::new(Verifiers {
            auth: Arc::clone(&auth),
        }));
        scram.set_iterations(SCRAM_ITERATIONS);
        let sasl = SASLAuthStartupHandler::new(Arc::new(Params))
            .with_scram(scram)
            .with_pid_secret_key_generator(PIDS.clone())
            .with_connection_manager(CONNECTIONS.clone());
        Self {
            auth,
            sasl,
            connections_full,
        }
    }
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message,
    )))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(startup) = &message {
            if self.connections_full {
                return Err(fatal("53300", "sorry, too many clients already".into()));
            }
            let user = startup.parameters.get("user").cloned().unwrap_or_default();
            let database = startup
                .parameters
                .get("database")
                .cloned()
                .unwrap_or_else(|| user.clone());
            if database != self.auth.database {
                return Err(fatal(
                    "3D000",
                    format!("database \"{database}\" does not exist"),
                ));
            }
            if self.auth.trust {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let (pid, key) = PIDS.generate(client);
                client.set_pid_and_secret_key(pid, key.clone());
                let (handle, guard) = CONNECTIONS.register(pid, key);
                client.session_extensions().insert(handle);
                client.session_extensions().insert(guard);
                finish_authentication(client, &Params).await?;
                client.session_extensions().insert(Authenticated);
                return Ok(());
            }
        }
        if self.auth.trust {
            return Ok(());
        }
        self.sasl.on_startup(client, message).await?;
        if matches!(
            client.state(),
            pgwire::api::PgWireConnectionState::ReadyForQuery
        ) {
            client.session_extensions().insert(Authenticated);
        }
        Ok(())
    }
}
