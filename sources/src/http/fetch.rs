//! One GET of an HTTP source's URL: a shared client, the headers from the source's secret,
//! retries with exponential backoff, and errors that name the source and URL (never a
//! header value).

use tributary_catalog::ObjectName;

use serde_json::Value;

use super::{HttpSourceSpec, MAX_BODY};
use tributary_catalog::Catalog;
use tributary_sql::error::{Error, Result};

/// How an attempt failed, and whether another attempt may help.
pub(super) struct Failure {
    message: String,
    retryable: bool,
}

/// The body of one successful GET, with retries and exponential backoff. Connection errors,
/// timeouts, 5xx, 408 and 429 answers are retried; other answers are final.
pub(super) async fn fetch(
    spec: &HttpSourceSpec,
    headers: &[(String, String)],
    name: &ObjectName,
) -> Result<bytes::Bytes> {
    let client = client()?;
    let attempts = spec.retries + 1;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match fetch_once(client, spec, headers).await {
            Ok(body) => return Ok(body),
            Err(failure) => failure,
        };
        if !failure.retryable || attempt >= attempts {
            let tries = if attempt > 1 {
                format!(" (after {attempt} attempts)")
            } else {
                String::new()
            };
            return Err(Error::SourceUnavailable(format!(
                "http source \"{name}\" ({}): {}{tries}",
                spec.url, failure.message
            )));
        }
        let wait = spec.backoff(attempt);
        tracing::info!(
            source = %name,
            attempt,
            wait_ms = wait.as_millis() as u64,
            error = %failure.message,
            "http source poll failed, retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

pub(super) fn client() -> Result<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            Error::Internal(format!("cannot build the http client: {}", error_chain(&e)))
        })?;
    Ok(CLIENT.get_or_init(|| client))
}

pub(super) async fn fetch_once(
    client: &reqwest::Client,
    spec: &HttpSourceSpec,
    headers: &[(String, String)],
) -> std::result::Result<bytes::Bytes, Failure> {
    let mut request = client
        .get(&spec.url)
        .header(reqwest::header::ACCEPT, "application/json");
    for (name, value) in headers {
        let (Ok(name), Ok(mut value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) else {
            continue; // checked by parse_headers
        };
        // Kept out of reqwest's and hyper's debug output.
        value.set_sensitive(true);
        request = request.header(name, value);
    }
    let timed_out = || Failure {
        message: format!(
            "timed out after {}",
            humantime::format_duration(spec.timeout)
        ),
        retryable: true,
    };
    let read = async {
        let mut response = request.send().await.map_err(|e| request_failure(e, spec))?;
        let status = response.status();
        if !status.is_success() {
            let retryable = status.is_server_error()
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::REQUEST_TIMEOUT;
            return Err(Failure {
                message: format!("the server answered {status}"),
                retryable,
            });
        }
        if let Some(length) = response.content_length()
            && length > MAX_BODY as u64
        {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| request_failure(e, spec))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    // reqwest's own timeout covers connecting, the headers and the body; this one also
    // bounds anything it does not (a resolver that hangs).
    match tokio::time::timeout(spec.timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(timed_out()),
    }
}

pub(super) fn too_large() -> Failure {
    Failure {
        message: format!("the response is larger than {} MiB", MAX_BODY >> 20),
        retryable: false,
    }
}

pub(super) fn request_failure(e: reqwest::Error, spec: &HttpSourceSpec) -> Failure {
    if e.is_timeout() {
        return Failure {
            message: format!(
                "timed out after {}",
                humantime::format_duration(spec.timeout)
            ),
            retryable: true,
        };
    }
    Failure {
        message: format!("request failed: {}", error_chain(&e.without_url())),
        retryable: true,
    }
}

/// An error and its causes, as one lowercase line (reqwest's own text says little alone).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ").to_lowercase()
}

/// The request headers a secret holds: a JSON object of strings, or `Name: value` lines.
/// Errors never quote the value.
pub fn parse_headers(secret: &str, value: &str) -> Result<Vec<(String, String)>> {
    let bad = |why: String| {
        Error::bad_input(format!(
            "secret \"{secret}\" does not hold request headers: {why} (write a JSON object or \
             'Name: value' lines)"
        ))
    };
    let trimmed = value.trim();
    let pairs: Vec<(String, String)> = if trimmed.starts_with('{') {
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed) else {
            return Err(bad("it is not a valid JSON object".into()));
        };
        map.into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                _ => Err(bad(format!("the value of header \"{k}\" is not a string"))),
            })
            .collect::<Result<_>>()?
    } else {
        trimmed
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, line)| match line.split_once(':') {
                Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
                None => Err(bad(format!("line {} has no ':'", i + 1))),
            })
            .collect::<Result<_>>()?
    };
    for (name, value) in &pairs {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(bad(format!("\"{name}\" is not a valid header name")));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(bad(format!("the value of header \"{name}\" is not valid")));
        }
    }
    Ok(pairs)
}

/// The headers of `headers_secret`, resolved at each poll (an `ENV` secret follows the
/// server's environment).
pub(super) fn request_headers(
    catalog: &Catalog,
    spec: &HttpSourceSpec,
) -> Result<Vec<(String, String)>> {
    let Some(secret) = &spec.headers_secret else {
        return Ok(Vec::new());
    };
    let value = crate::secret::resolve_named_in_option(catalog, secret)?;
    parse_headers(secret, value.expose())
}
