//! The workspace's modules import each other without a cycle.
//!
//! The design promises layers (docs/architecture.md): in the engine, `sys` at the bottom, then
//! pipes and sockets, directions and the two engines, the connection, the event loop, the relay
//! API, with the description (`route/`) and the resolver beside them; imports flow one way.
//! This test reads every crate's source, builds the graph of which module uses which (`use`
//! paths and qualified paths through `crate::`, `super::`, `self::` and child modules, outside
//! comments, strings and `#[cfg(test)]` code), and fails on any cycle, naming it. A re-export
//! counts as a use of the module that re-exports it, so `crate::Stats` is a use of whatever
//! module `lib.rs` takes `Stats` from.
//!
//! It is deliberately a plain reader of the source rather than a compiler plugin
//! (`cargo modules dependencies --acyclic` answers the same question but needs a nightly-era
//! rust-analyzer build): it runs in every `cargo test` and fails on the first new back-edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules must form a graph without cycles, relative to this crate (the CLI,
/// which is not published: this test reads the whole workspace).
const CRATES: &[&str] = &[
    "../spliceway/src",
    "../spliceway-config/src",
    "../spliceway-bench/src",
    "../spliceway-cli/src",
    "../spliceway-test-kit/src",
];

type Module = Vec<String>;

/// One source file: its module path and its code with comments, strings and tests removed.
struct Source {
    module: Module,
    code: String,
    children: BTreeSet<String>,
}

fn module_of(root: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Removes comments and the contents of string and char literals (keeping their quotes), so
/// that paths in docs and messages are not taken for imports.
fn strip_comments_and_strings(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(text.len(), |n| i + n);
            i = end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(text.len(), |n| i + n + 2);
            i = end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|&c| c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            let end = rest[body..]
                .find(&close)
                .map_or(text.len(), |n| i + body + n + close.len());
            out.push_str("\"\"");
            i = end;
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if bytes[i] == b'\'' && is_char_literal(&bytes[i..]) {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("' '");
            i = j + 1;
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Whether a `'` starts a char literal (`'a'`, `'\n'`) rather than a lifetime (`'a`).
fn is_char_literal(bytes: &[u8]) -> bool {
    match bytes {
        [b'\'', b'\\', ..] => true,
        [b'\'', _, b'\'', ..] => true,
        [b'\'', rest @ ..] => {
            // A multi-byte UTF-8 char: its bytes, then a quote.
            let len = rest.first().map_or(1, |b| b.leading_ones().max(1) as usize);
            rest.get(len) == Some(&b'\'')
        }
        _ => false,
    }
}

/// Removes `#[cfg(test)]` items: a module (with its braces) or a single `use`/`fn` item.
fn strip_test_code(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let brace = item.find('{');
        let semi = item.find(';');
        let end = match (brace, semi) {
            (Some(b), Some(s)) if s < b => s + 1,
            (Some(b), _) => {
                let mut depth = 0;
                let mut end = item.len();
                for (k, c) in item[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, Some(s)) => s + 1,
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths that start at `at` (just after a `prefix::`): one path, or each entry of a
/// `{...}` group (one level deep).
fn paths_after(code: &str, at: usize) -> Vec<Vec<String>> {
    let rest = &code[at..];
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 1;
        let mut end = group.len();
        for (k, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = &group[..end];
        let mut entries = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (k, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    entries.push(&inner[start..k]);
                    start = k + 1;
                }
                _ => {}
            }
        }
        entries.push(&inner[start..]);
        return entries
            .into_iter()
            .map(|e| segments(e.trim()))
            .filter(|s| !s.is_empty())
            .collect();
    }
    vec![segments(rest)]
}

/// `a::b::C` at the start of `text`, as segments.
fn segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let ident: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        out.push(ident);
        match rest.strip_prefix("::") {
            Some(r) if r.starts_with(|c: char| is_ident(c)) => rest = r,
            _ => break,
        }
    }
    out
}

/// Every occurrence of `word::` in `code` that starts an identifier (not the end of one).
fn occurrences<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    let needle = format!("{word}::");
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(found) = code[from..].find(&needle) {
            let at = from + found;
            from = at + needle.len();
            let before = code[..at].chars().next_back();
            if before.is_none_or(|c| !is_ident(c) && c != ':') {
                return Some(at + needle.len());
            }
        }
        None
    })
}

struct Graph {
    modules: BTreeSet<Module>,
    /// `pub use` names of each module: name -> the module path it was taken from.
    reexports: BTreeMap<Module, BTreeMap<String, Vec<String>>>,
    edges: BTreeMap<Module, BTreeSet<Module>>,
}

impl Graph {
    /// The module a path (absolute segments) lands in: the longest existing module prefix,
    /// following a re-export one step when the path names an item the module re-exports.
    fn resolve(&self, path: &[String]) -> Module {
        let mut module: Module = Vec::new();
        for (i, segment) in path.iter().enumerate() {
            let mut next = module.clone();
            next.push(segment.clone());
            if self.modules.contains(&next) {
                module = next;
                continue;
            }
            if let Some(target) = self.reexports.get(&module).and_then(|r| r.get(segment))
                && i == path.len() - 1
            {
                let mut absolute = module.clone();
                absolute.extend(target.iter().cloned());
                let resolved = self.resolve_no_reexport(&absolute);
                if resolved.len() > module.len() {
                    return resolved;
                }
            }
            break;
        }
        module
    }

    fn resolve_no_reexport(&self, path: &[String]) -> Module {
        let mut module: Module = Vec::new();
        for segment in path {
            let mut next = module.clone();
            next.push(segment.clone());
            if !self.modules.contains(&next) {
                break;
            }
            module = next;
        }
        module
    }
}

fn build(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut sources = Vec::new();
    for file in files {
        let module = module_of(root, &file);
        // Test modules in files of their own (`mod tests;` under `#[cfg(test)]`).
        if module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = strip_test_code(&strip_comments_and_strings(&text));
        let children = code
            .split(';')
            .filter_map(|stmt| {
                let stmt = stmt.trim();
                let stmt = stmt.rsplit(['}', ']', '{']).next().unwrap_or(stmt).trim();
                let stmt = stmt.strip_prefix("pub(crate) ").unwrap_or(stmt);
                let stmt = stmt.strip_prefix("pub ").unwrap_or(stmt);
                stmt.strip_prefix("mod ")
                    .map(|m| m.trim().to_string())
                    .filter(|m| m.chars().all(is_ident))
            })
            .collect();
        sources.push(Source {
            module,
            code,
            children,
        });
    }
    let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
    let mut graph = Graph {
        modules,
        reexports: BTreeMap::new(),
        edges: BTreeMap::new(),
    };
    // Re-exports: `pub use a::b::{C, D};` and `pub(crate) use a::C;`.
    for source in &sources {
        let mut names = BTreeMap::new();
        for stmt in source.code.split(';') {
            let stmt = stmt.trim();
            let Some(body) = stmt
                .strip_prefix("pub use ")
                .or_else(|| stmt.strip_prefix("pub(crate) use "))
            else {
                continue;
            };
            let (base, at) = match body.rfind("::{") {
                Some(b) => (&body[..b], b + 2),
                None => match body.rfind("::") {
                    Some(b) => (&body[..b], b + 2),
                    None => continue,
                },
            };
            let base = segments(
                base.trim_start_matches("crate::")
                    .trim_start_matches("self::"),
            );
            for entry in paths_after(body, at) {
                if let Some(name) = entry.last() {
                    let mut target = base.clone();
                    target.extend(entry.iter().cloned());
                    names.insert(name.clone(), target);
                }
            }
        }
        graph.reexports.insert(source.module.clone(), names);
    }
    for source in &sources {
        let mut uses = BTreeSet::new();
        let here = &source.module;
        let mut absolute_paths = Vec::new();
        for at in occurrences(&source.code, "crate") {
            absolute_paths.extend(paths_after(&source.code, at));
        }
        for at in occurrences(&source.code, "super") {
            let parent = &here[..here.len().saturating_sub(1)];
            for path in paths_after(&source.code, at) {
                let mut absolute = parent.to_vec();
                absolute.extend(path);
                absolute_paths.push(absolute);
            }
        }
        for word in std::iter::once("self".to_string()).chain(source.children.iter().cloned()) {
            for at in occurrences(&source.code, &word) {
                for path in paths_after(&source.code, at) {
                    let mut absolute = here.clone();
                    if word != "self" {
                        absolute.push(word.clone());
                    }
                    absolute.extend(path);
                    absolute_paths.push(absolute);
                }
            }
        }
        for path in absolute_paths {
            let target = graph.resolve(&path);
            if target != *here && !target.is_empty() {
                uses.insert(target);
            }
        }
        graph.edges.insert(here.clone(), uses);
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<Module>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on_stack: BTreeSet<&'g Module>,
        next: usize,
        found: Vec<Vec<Module>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g Module) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.edges.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

fn describe(graph: &Graph) -> String {
    graph
        .edges
        .iter()
        .map(|(m, uses)| {
            let uses: Vec<String> = uses.iter().map(name).collect();
            format!("  {} -> {}", name(m), uses.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn crate_root(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn no_crate_has_an_import_cycle() {
    let mut failures = Vec::new();
    for relative in CRATES {
        let root = crate_root(relative);
        let graph = build(&root);
        assert!(
            graph.modules.len() > 3,
            "{}: found only {} modules; is the path right?",
            root.display(),
            graph.modules.len()
        );
        for cycle in cycles(&graph) {
            let names: Vec<String> = cycle.iter().map(name).collect();
            failures.push(format!(
                "{}: modules import each other in a circle: {}\nthe graph:\n{}",
                relative,
                names.join(" <-> "),
                describe(&graph)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn sys_imports_nothing_of_the_engine() {
    let graph = build(&crate_root("../spliceway/src"));
    let sys = vec!["sys".to_string()];
    assert_eq!(
        graph.edges.get(&sys).map(BTreeSet::len),
        Some(0),
        "sys.rs, the only unsafe code, must stand alone: {:?}",
        graph.edges.get(&sys)
    );
}

#[test]
fn the_reader_finds_a_cycle_when_there_is_one() {
    // The check must be able to fail: two files of a scratch crate that use each other.
    let dir = std::env::temp_dir().join(format!("spliceway-module-graph-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "mod a;\nmod b;\nmod c;\npub use c::Thing;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("a.rs"),
        "// crate::c::Thing in a comment is not a use\nuse crate::b::inner::Helper;\n",
    )
    .unwrap();
    std::fs::write(src.join("b/mod.rs"), "pub(crate) mod inner;\n").unwrap();
    std::fs::write(
        src.join("b/inner.rs"),
        "pub struct Helper;\nfn f() { let _ = crate::a::VALUE; let _ = \"crate::c\"; }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub struct Thing;\n#[cfg(test)]\nmod tests { use crate::a::X; }\n",
    )
    .unwrap();
    let graph = build(&src);
    let found = cycles(&graph);
    std::fs::remove_dir_all(&dir).unwrap();
    let names: Vec<Vec<String>> = found
        .iter()
        .map(|c| {
            let mut n: Vec<String> = c.iter().map(name).collect();
            n.sort();
            n
        })
        .collect();
    assert_eq!(
        names,
        vec![vec!["a".to_string(), "b::inner".to_string()]],
        "{}",
        describe(&graph)
    );
    // The re-export at the root resolves to the module that defines the item.
    assert_eq!(graph.resolve(&["Thing".to_string()]), vec!["c".to_string()]);
}
