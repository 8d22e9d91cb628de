//! The example's FX rates API: a stand-in for a public rates service, on loopback.
//!
//! `GET /v1/rates` answers `{"base": "USD", "as_of": ..., "rates": [{"currency", "rate_to_usd"}]}`.
//! Rates move once a minute (a smooth function of the minute, so runs are reproducible), so
//! polls within one minute see the same body and append nothing, and the next minute's poll
//! brings a new snapshot.

use axum::{Router, http::header, routing::get};
use chrono::{DurationRound, Utc};
use serde_json::{Value, json};

use super::generate::CURRENCIES;

/// Binds `addr` and serves the API in the background.
pub(crate) async fn start(addr: &str) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for the FX rates API on {addr}: {e}"))?;
    let app = Router::new().route(
        "/v1/rates",
        get(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                rates_now().to_string(),
            )
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the demo's FX rates API stopped");
        }
    });
    Ok(())
}

fn rates_now() -> Value {
    let minute = Utc::now()
        .duration_trunc(chrono::TimeDelta::minutes(1))
        .unwrap_or_else(|_| Utc::now());
    rates_at(minute)
}

fn rates_at(minute: chrono::DateTime<Utc>) -> Value {
    let m = minute.timestamp() as f64 / 60.0;
    let rates: Vec<Value> = CURRENCIES
        .iter()
        .enumerate()
        .map(|(i, (currency, base))| {
            let drift = if i == 0 {
                1.0
            } else {
                1.0 + 0.01 * (m / 37.0 + i as f64).sin()
            };
            json!({"currency": currency, "rate_to_usd": (base * drift * 1e6).round() / 1e6})
        })
        .collect();
    json!({"base": "USD", "as_of": minute.to_rfc3339(), "rates": rates})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_change_by_the_minute_only() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rates_at(t), rates_at(t));
        let next = rates_at(t + chrono::TimeDelta::minutes(1));
        assert_ne!(rates_at(t)["rates"], next["rates"]);
        assert_eq!(next["rates"][0]["rate_to_usd"], 1.0);
    }
}
