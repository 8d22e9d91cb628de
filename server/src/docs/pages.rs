//! The pages of the documentation site, as maud templates (every value is escaped).

use maud::{DOCTYPE, Markup, PreEscaped, html};
use tributary_catalog::{CatalogObject, ObjectKind, Run};

use super::Site;
use super::lineage_svg::{self, Graph, object_href};

const CSS: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2433; background: #f6f7f9; }
header { background: #14324a; color: #fff; padding: 10px 24px; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
main { padding: 16px 24px; max-width: 1400px; }
h1 { margin: 8px 0 4px; font-size: 22px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
table { border-collapse: collapse; background: #fff; width: 100%; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
pre { background: #fff; border: 1px solid #e3e6ea; padding: 10px; overflow-x: auto; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 9px; font-size: 12px; background: #e3e6ea; }
.pass, .fresh, .succeeded { background: #d5f2dc; } .fail, .stale, .failed, .error { background: #fbd9d6; }
.warn, .unknown, .skipped { background: #fcefc7; }
.description { color: #4a5568; }
svg.lineage { background: #fff; border: 1px solid #e3e6ea; }
svg .node rect { fill: #fff; stroke: #7a8699; }
svg .node.model rect { fill: #e8f0fb; } svg .node.source rect { fill: #eaf7ee; }
svg .node.table rect { fill: #fdf3e4; } svg .node.view rect { fill: #f2ecfa; }
svg .node.focus rect { stroke: #14324a; stroke-width: 2.5; }
svg a:hover rect { stroke: #d9480f; }
svg .name { font-weight: 600; font-size: 13px; } svg .kind { fill: #6b7585; font-size: 11px; }
svg .column { font-size: 11px; } svg .type { fill: #8a93a3; }
svg .edge { fill: none; stroke: #7a8699; stroke-width: 1.5; }
svg .column-edge { fill: none; stroke: #d9480f; stroke-opacity: .55; }
"#;

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Tributary" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header { a href="/" { "Tributary" } " · documentation" }
                main { (body) }
            }
        }
    }
}

fn description(object: &CatalogObject) -> Option<&str> {
    object
        .comment
        .as_deref()
        .or_else(|| object.options.get("description").map(String::as_str))
}

fn badge(text: &str) -> Markup {
    html! { span class=(format!("badge {}", text.replace(' ', "-"))) { (text) } }
}

const KINDS: [(ObjectKind, &str); 4] = [
    (ObjectKind::Source, "Sources"),
    (ObjectKind::Table, "Tables"),
    (ObjectKind::Model, "Models"),
    (ObjectKind::View, "Views"),
];

/// `/`: every object by kind, with its description, freshness and tests.
pub(super) fn index(site: &Site) -> Markup {
    let mut objects: Vec<&CatalogObject> = site.objects.values().collect();
    objects.sort_by(|a, b| a.name.cmp(&b.name));
    layout(
        "Catalog",
        html! {
            h1 { "Catalog" }
            p.description {
                (site.objects.len()) " objects, " (site.tests.len()) " tests. "
                "Every page is read from the live catalog."
            }
            @for (kind, heading) in KINDS {
                @let of_kind: Vec<&&CatalogObject> = objects.iter().filter(|o| o.kind == kind).collect();
                @if !of_kind.is_empty() {
                    h2 { (heading) " (" (of_kind.len()) ")" }
                    table {
                        tr { th { "name" } th { "description" } th { "freshness" } th { "tests" } }
                        @for o in of_kind {
                            @let tests = site.tests_of(o.id);
                            @let failing = tests.iter().filter(|(_, r)| r.is_some_and(|r| r.status.as_str() != "pass")).count();
                            tr {
                                td { a href=(object_href(o)) { (o.name.to_string()) } }
                                td.description { (description(o).unwrap_or("")) }
                                td { @if let Some(f) = site.freshness.get(&o.name) { (badge(f.status)) } }
                                td {
                                    @if !tests.is_empty() {
                                        (tests.len()) @if failing > 0 { " " (badge("fail")) " " (failing) " failing" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub(super) fn not_found(name: &str) -> Markup {
    layout(
        "Not found",
        html! {
            h1 { "No object " (name) }
            p { a href="/" { "Back to the catalog" } }
        },
    )
}

/// `/objects/{schema}/{name}`: one object in full.
pub(super) fn object(site: &Site, object: &CatalogObject, runs: &[Run], columns: bool) -> Markup {
    let graph = Graph {
        objects: &site.objects,
        edges: &site.edges,
        column_edges: &site.column_edges,
    };
    let name = object.name.to_string();
    let tests = site.tests_of(object.id);
    layout(
        &name,
        html! {
            h1 { (name) " " (badge(object.kind.as_str())) }
            @if let Some(d) = description(object) { p.description { (d) } }
            @if let Some(f) = site.freshness.get(&object.name) {
                p {
                    "Freshness: " (badge(f.status))
                    @if let Some(at) = f.last_data_at { " · data as of " (at.format("%Y-%m-%d %H:%M:%S UTC")) }
                    @if let Some(s) = f.staleness_seconds { " · " (human(s)) " old" }
                    @if let Some(m) = &f.max_staleness { " · objective " (m) }
                }
            }
            h2 { "Lineage" }
            p {
                @if columns { a href=(object_href(object)) { "hide columns" } }
                @else { a href=(format!("{}?columns=1", object_href(object))) { "show columns" } }
            }
            (lineage_svg::render(&graph, object.id, columns))
            h2 { "Columns" }
            table {
                tr { th { "column" } th { "type" } th { "nullable" } th { "description" } th { "computed from" } }
                @for c in &object.columns {
                    tr {
                        td { code { (c.name) } }
                        td { (c.data_type) }
                        td { @if c.nullable { "yes" } @else { "no" } }
                        td.description { (c.comment.as_deref().unwrap_or("")) }
                        td {
                            @for e in site.column_edges.iter().filter(|e| e.object_id == object.id && e.downstream_column.as_deref() == Some(c.name.as_str())) {
                                @if let Some(up) = site.objects.get(&e.upstream_id) {
                                    a href=(object_href(up)) { (up.name.to_string()) "." (e.upstream_column) } " "
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Tests" }
            @if tests.is_empty() { p.description { "No tests." } }
            @else {
                table {
                    tr { th { "test" } th { "kind" } th { "severity" } th { "last result" } th { "failing rows" } th { "checked" } th { "query" } }
                    @for (t, r) in &tests {
                        tr {
                            td { (t.name) }
                            td { (t.kind) }
                            td { (t.severity.as_str()) }
                            td { @if let Some(r) = r { (badge(r.status.as_str())) } @else { "not run yet" } }
                            td { @if let Some(r) = r { (r.failing_rows) } }
                            td { @if let Some(r) = r { (r.started_at) " (" (r.scope) ")" } }
                            td { code { (t.query) } }
                        }
                    }
                }
            }
            h2 { "Last runs" }
            @if runs.is_empty() { p.description { "No runs." } }
            @else {
                table {
                    tr { th { "run" } th { "trigger" } th { "status" } th { "strategy" } th { "started" } th { "duration" } th { "rows written" } th { "reason / error" } }
                    @for r in runs.iter().rev() {
                        tr {
                            td { (r.id) }
                            td { (r.trigger) }
                            td { (badge(r.status.as_str())) }
                            td { (r.strategy.as_deref().unwrap_or("")) }
                            td { (r.started_at) }
                            td { (duration(r)) }
                            td { @if let Some(n) = r.rows_written { (n) } }
                            td { (r.error.as_deref().or(r.reason.as_deref()).unwrap_or("")) }
                        }
                    }
                }
            }
            h2 { "Definition" }
            pre { code { (object.sql) } }
        },
    )
}

fn duration(run: &Run) -> String {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    match (
        parse(&run.started_at),
        run.finished_at.as_deref().and_then(parse),
    ) {
        (Some(s), Some(f)) => format!("{} ms", (f - s).num_milliseconds()),
        _ => String::new(),
    }
}

fn human(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}
