//! The lineage graph around one object, drawn as SVG on the server (no script, no CDN):
//! every object upstream and downstream of it, in layers by longest path so each edge points
//! right, each node a link to its own page. With columns on, nodes list their columns and
//! column edges connect them.

use std::collections::{BTreeMap, HashMap, HashSet};

use maud::{Markup, html};
use tributary_catalog::{CatalogObject, ColumnEdge};

const NODE_WIDTH: i64 = 210;
const LAYER_GAP: i64 = 90;
const ROW_GAP: i64 = 22;
const HEADER: i64 = 38;
const COLUMN_ROW: i64 = 18;
const MARGIN: i64 = 12;

/// The objects and edges to draw from.
pub(super) struct Graph<'a> {
    pub objects: &'a HashMap<i64, CatalogObject>,
    /// `(downstream, upstream)` dependency edges.
    pub edges: &'a [(i64, i64)],
    pub column_edges: &'a [ColumnEdge],
}

struct Node<'a> {
    object: &'a CatalogObject,
    x: i64,
    y: i64,
    height: i64,
}

impl Node<'_> {
    fn column_y(&self, column: &str) -> i64 {
        let index = self
            .object
            .columns
            .iter()
            .position(|c| c.name == column)
            .unwrap_or(0) as i64;
        self.y + HEADER + index * COLUMN_ROW + COLUMN_ROW / 2
    }
}

/// For every node reachable from `start` along `next`, the longest path from `start` to it,
/// so that every edge between two of them goes from a shorter distance to a longer one.
fn longest_paths(start: i64, next: &HashMap<i64, Vec<i64>>) -> HashMap<i64, i64> {
    let mut reached = HashSet::new();
    let mut stack = vec![start];
    while let Some(n) = stack.pop() {
        if reached.insert(n) {
            stack.extend(next.get(&n).into_iter().flatten().copied());
        }
    }
    let mut back: HashMap<i64, Vec<i64>> = HashMap::new();
    for (from, tos) in next {
        if reached.contains(from) {
            for to in tos {
                back.entry(*to).or_default().push(*from);
            }
        }
    }
    let mut memo = HashMap::new();
    let mut on_path = HashSet::new();
    reached
        .iter()
        .map(|n| (*n, visit_to(*n, start, &back, &mut memo, &mut on_path)))
        .collect()
}

/// Longest path from `node` back to `start` along `back` edges (all of which lead to start).
fn visit_to(
    node: i64,
    start: i64,
    back: &HashMap<i64, Vec<i64>>,
    memo: &mut HashMap<i64, i64>,
    on_path: &mut HashSet<i64>,
) -> i64 {
    if node == start {
        return 0;
    }
    if let Some(d) = memo.get(&node) {
        return *d;
    }
    on_path.insert(node);
    let mut depth = 1;
    for prev in back.get(&node).into_iter().flatten() {
        if !on_path.contains(prev) {
            depth = depth.max(visit_to(*prev, start, back, memo, on_path) + 1);
        }
    }
    on_path.remove(&node);
    memo.insert(node, depth);
    depth
}

/// The SVG of `focus`'s lineage; `columns` draws columns and column edges.
pub(super) fn render(graph: &Graph<'_>, focus: i64, columns: bool) -> Markup {
    let mut upstream: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut downstream: HashMap<i64, Vec<i64>> = HashMap::new();
    for (down, up) in graph.edges {
        upstream.entry(*down).or_default().push(*up);
        downstream.entry(*up).or_default().push(*down);
    }
    let mut layer: HashMap<i64, i64> = HashMap::new();
    for (id, d) in longest_paths(focus, &upstream) {
        layer.insert(id, -d);
    }
    for (id, d) in longest_paths(focus, &downstream) {
        layer.entry(id).or_insert(d);
    }
    let mut layers: BTreeMap<i64, Vec<&CatalogObject>> = BTreeMap::new();
    for (id, l) in &layer {
        if let Some(object) = graph.objects.get(id) {
            layers.entry(*l).or_default().push(object);
        }
    }
    let first = layers.keys().next().copied().unwrap_or(0);
    let mut nodes: HashMap<i64, Node<'_>> = HashMap::new();
    let mut height = 0;
    for (l, objects) in &mut layers {
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        let mut y = MARGIN;
        for object in objects.iter() {
            let h = if columns {
                HEADER + COLUMN_ROW * object.columns.len() as i64 + 6
            } else {
                HEADER
            };
            let x = MARGIN + (l - first) * (NODE_WIDTH + LAYER_GAP);
            nodes.insert(
                object.id,
                Node {
                    object,
                    x,
                    y,
                    height: h,
                },
            );
            y += h + ROW_GAP;
        }
        height = height.max(y);
    }
    let width = MARGIN * 2 + layers.len().max(1) as i64 * (NODE_WIDTH + LAYER_GAP) - LAYER_GAP;
    let table_edges: Vec<(&Node<'_>, &Node<'_>)> = graph
        .edges
        .iter()
        .filter_map(|(down, up)| Some((nodes.get(up)?, nodes.get(down)?)))
        .collect();
    let column_edges: Vec<(&Node<'_>, &str, &Node<'_>, &str)> = if columns {
        graph
            .column_edges
            .iter()
            .filter_map(|e| {
                let column = e.downstream_column.as_deref()?;
                Some((
                    nodes.get(&e.upstream_id)?,
                    e.upstream_column.as_str(),
                    nodes.get(&e.object_id)?,
                    column,
                ))
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut ordered: Vec<&Node<'_>> = nodes.values().collect();
    ordered.sort_by_key(|n| (n.x, n.y));
    html! {
        svg.lineage xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img"
            aria-label="lineage graph" {
            defs {
                marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"
                    markerHeight="7" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" fill="#7a8699" {}
                }
            }
            @for (from, to) in &table_edges {
                path.edge d=(curve(from.x + NODE_WIDTH, from.y + HEADER / 2, to.x, to.y + HEADER / 2)) marker-end="url(#arrow)" {}
            }
            @for (from, from_column, to, to_column) in &column_edges {
                path.column-edge d=(curve(from.x + NODE_WIDTH, from.column_y(from_column), to.x, to.column_y(to_column))) {
                    title { (format!("{}.{from_column} → {}.{to_column}", from.object.name, to.object.name)) }
                }
            }
            @for node in &ordered {
                a href=(object_href(node.object)) data-object=(node.object.name.to_string()) {
                    g class=(format!("node {}{}", node.object.kind, if node.object.id == focus { " focus" } else { "" })) {
                        rect x=(node.x) y=(node.y) width=(NODE_WIDTH) height=(node.height) rx="6" {}
                        text x=(node.x + 10) y=(node.y + 16) class="name" { (node.object.name.to_string()) }
                        text x=(node.x + 10) y=(node.y + 31) class="kind" { (node.object.kind.as_str()) }
                        @if columns {
                            @for (i, c) in node.object.columns.iter().enumerate() {
                                text x=(node.x + 14) y=(node.y + HEADER + i as i64 * COLUMN_ROW + 13) class="column" {
                                    (c.name) " " tspan.type { (c.data_type) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn curve(x1: i64, y1: i64, x2: i64, y2: i64) -> String {
    let mid = (x1 + x2) / 2;
    format!("M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}")
}

/// The page of an object.
pub(super) fn object_href(object: &CatalogObject) -> String {
    format!(
        "/objects/{}/{}",
        percent(&object.name.schema),
        percent(&object.name.name)
    )
}

/// Percent-encodes everything but unreserved characters, for a path segment.
fn percent(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
