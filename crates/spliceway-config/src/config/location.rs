//! Turning byte offsets in the file into `line:column` and into the key that was being read.
//!
//! toml reports its own errors (syntax, unknown keys, wrong types) with a byte range only. The
//! parsed document ([`DeTable`]) keeps the span of every key and value, so the key at an offset
//! can be found by walking it: the deepest key or value whose span holds the offset.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |nl| nl + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Where in the document an offset is: the route it belongs to (by name, or `#n` if it has
/// none yet) and the key path (relative to the route inside a route).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) route: Option<String>,
    pub(super) key: Option<String>,
}

/// The place of byte `offset` in `root`.
pub(super) fn place_of(root: &DeTable<'_>, offset: usize) -> Place {
    let mut best = Vec::new();
    walk_table(root, offset, &mut Vec::new(), &mut best);
    // `best` is the path of keys (and `[n]` for array elements) to the deepest match.
    let mut place = Place::default();
    let mut keys: &[Segment] = &best;
    if let [Segment::Key(first), Segment::Index(index), rest @ ..] = keys
        && first == "route"
    {
        let name = root
            .get("route")
            .and_then(|v| v.get_ref().as_array())
            .and_then(|a| a.get(*index))
            .and_then(|e| e.get_ref().as_table())
            .and_then(|t| t.get("name"))
            .and_then(|n| n.get_ref().as_str().map(str::to_owned));
        place.route = Some(match name {
            Some(name) => format!("{name:?}"),
            None => format!("#{}", index + 1),
        });
        keys = rest;
    }
    let names: Vec<&str> = keys
        .iter()
        .filter_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
        .collect();
    if !names.is_empty() {
        place.key = Some(names.join("."));
    }
    place
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn contains(span: Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

fn consider(path: &[Segment], best: &mut Vec<Segment>) {
    if path.len() >= best.len() {
        *best = path.to_vec();
    }
}

fn walk_table(
    table: &DeTable<'_>,
    offset: usize,
    path: &mut Vec<Segment>,
    best: &mut Vec<Segment>,
) {
    for (key, value) in table {
        path.push(Segment::Key(key.get_ref().to_string()));
        if contains(key.span(), offset) || contains(value.span(), offset) {
            consider(path, best);
        }
        walk_value(value.get_ref(), offset, path, best);
        path.pop();
    }
}

fn walk_value(
    value: &DeValue<'_>,
    offset: usize,
    path: &mut Vec<Segment>,
    best: &mut Vec<Segment>,
) {
    match value {
        DeValue::Table(table) => walk_table(table, offset, path, best),
        DeValue::Array(array) => {
            for (index, element) in array.iter().enumerate() {
                path.push(Segment::Index(index));
                if contains(element.span(), offset) {
                    consider(path, best);
                }
                walk_value(element.get_ref(), offset, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}
