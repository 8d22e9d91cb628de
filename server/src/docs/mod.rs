//! The documentation site on the HTTP port: `/` lists every source, table, model and view;
//! `/objects/{schema}/{name}` shows one with its SQL, columns and descriptions, tests and their
//! last results, freshness, last runs, and its lineage drawn as SVG (`?columns=1` adds column
//! lineage). Pages are rendered from the catalog on each request, so they are always live,
//! and are self-contained (inline CSS, no script, no CDN).

mod lineage_svg;
mod pages;

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tributary_catalog::{CatalogObject, ColumnEdge, DataTest, ObjectName, TestResult};
use tributary_engine::Engine;
use tributary_engine::system::freshness::Freshness;

pub(crate) fn routes() -> Router<Engine> {
    Router::new()
        .route("/", get(index))
        .route("/objects/{schema}/{name}", get(object))
}

/// Everything a page shows, read from the catalog once per request.
struct Site {
    objects: HashMap<i64, CatalogObject>,
    edges: Vec<(i64, i64)>,
    column_edges: Vec<ColumnEdge>,
    tests: Vec<DataTest>,
    latest_results: HashMap<i64, TestResult>,
    freshness: HashMap<ObjectName, Freshness>,
}

impl Site {
    async fn load(engine: &Engine) -> tributary_engine::error::Result<Self> {
        let catalog = engine.catalog();
        Ok(Site {
            objects: catalog.objects()?.into_iter().map(|o| (o.id, o)).collect(),
            edges: catalog.dependencies()?,
            column_edges: catalog.column_lineage()?,
            tests: catalog.tests()?,
            latest_results: catalog
                .latest_test_results()?
                .into_iter()
                .map(|r| (r.test_id, r))
                .collect(),
            freshness: engine
                .freshness()
                .await?
                .into_iter()
                .map(|f| (f.name.clone(), f))
                .collect(),
        })
    }

    fn by_name(&self, name: &ObjectName) -> Option<&CatalogObject> {
        self.objects.values().find(|o| &o.name == name)
    }

    /// Tests on `id` or reading it, with their latest result.
    fn tests_of(&self, id: i64) -> Vec<(&DataTest, Option<&TestResult>)> {
        self.tests
            .iter()
            .filter(|t| t.object_id == Some(id) || t.reads.contains(&id))
            .map(|t| (t, self.latest_results.get(&t.id)))
            .collect()
    }
}

fn failure(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "documentation page failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot read the catalog: {e}\n"),
    )
        .into_response()
}

async fn index(State(engine): State<Engine>) -> Response {
    match Site::load(&engine).await {
        Ok(site) => Html(pages::index(&site).into_string()).into_response(),
        Err(e) => failure(e),
    }
}

async fn object(
    State(engine): State<Engine>,
    Path((schema, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let site = match Site::load(&engine).await {
        Ok(site) => site,
        Err(e) => return failure(e),
    };
    let Some(object) = site.by_name(&ObjectName::new(schema.clone(), name.clone())) else {
        let page = pages::not_found(&format!("{schema}.{name}"));
        return (StatusCode::NOT_FOUND, Html(page.into_string())).into_response();
    };
    let runs = match engine.catalog().latest_runs(object.id, 10) {
        Ok(runs) => runs,
        Err(e) => return failure(e),
    };
    let columns = query
        .unwrap_or_default()
        .split('&')
        .any(|p| p == "columns=1" || p == "columns=true");
    Html(pages::object(&site, object, &runs, columns).into_string()).into_response()
}
