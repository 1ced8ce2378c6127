//! Every relative link in the repository's Markdown (README.md, docs/, packaging/, scripts/,
//! crates/) resolves to a file or directory inside the repository: a user who clones the
//! project must never meet a link to something that only exists beside it; and a link's
//! `#anchor` into a Markdown file (or within one) names one of that file's headings, as GitHub
//! makes their anchors, so that a renamed section does not leave readers at the top of a long
//! page. Web links (`http://`, `https://`, `mailto:`) are not checked.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                markdown_files(&path, out);
            }
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// The lines of a Markdown text outside its code fences (and without the fence lines).
fn outside_fences(text: &str) -> impl Iterator<Item = &str> {
    let mut in_fence = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            return false;
        }
        !in_fence
    })
}

/// The targets of `[text](target)` links, and of `[label]: target` definitions, outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in outside_fences(text) {
        // Inline code spans are not links.
        let mut code = false;
        let mut visible = String::new();
        for c in line.chars() {
            if c == '`' {
                code = !code;
            } else if !code {
                visible.push(c);
            }
        }
        let mut rest = visible.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            targets.push(
                after[..end]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            );
            rest = &after[end..];
        }
        let trimmed = visible.trim_start();
        if trimmed.starts_with('[')
            && let Some(at) = trimmed.find("]: ")
        {
            targets.push(trimmed[at + 3..].trim().to_string());
        }
    }
    targets
}

/// The anchors GitHub gives the headings of a Markdown text (outside code fences): lower case,
/// letters, digits, `-` and `_` kept, spaces made `-`, everything else dropped; a repeated
/// anchor gets `-1`, `-2`, ... after it.
fn heading_anchors(text: &str) -> HashSet<String> {
    let mut anchors = HashSet::new();
    for line in outside_fences(text) {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue; // "#word": not a heading
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let mut anchor = slug.clone();
        let mut n = 0;
        while !anchors.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{slug}-{n}");
        }
    }
    anchors
}

/// `path` with `.` and `..` resolved lexically; `None` if it climbs above the start.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// Why a link from `file` to `target` is wrong, if it is.
fn check(root: &Path, file: &Path, target: &str) -> Option<String> {
    if target.is_empty()
        || target.starts_with("http://")
        || target.starts_with("https://")
        || target.starts_with("mailto:")
    {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    if path.is_empty() {
        return anchor.and_then(|a| missing_anchor(file, a, target));
    }
    let dir = file.parent().unwrap();
    let joined = if let Some(absolute) = path.strip_prefix('/') {
        root.join(absolute)
    } else {
        dir.join(path)
    };
    let Some(resolved) = normalise(&joined) else {
        return Some(format!("{target}: climbs above the file system root"));
    };
    if !resolved.starts_with(root) {
        return Some(format!("{target}: points outside the repository"));
    }
    if !resolved.exists() {
        return Some(format!("{target}: no such file in the repository"));
    }
    match anchor {
        Some(anchor) if resolved.extension().is_some_and(|e| e == "md") => {
            missing_anchor(&resolved, anchor, target)
        }
        _ => None,
    }
}

/// Why `anchor` (of link `target`) is not a heading of Markdown file `page`, if it is not.
fn missing_anchor(page: &Path, anchor: &str, target: &str) -> Option<String> {
    let text = std::fs::read_to_string(page).ok()?;
    if heading_anchors(&text).contains(anchor) {
        None
    } else {
        Some(format!(
            "{target}: no heading of {} has that anchor",
            page.file_name().unwrap_or_default().to_string_lossy()
        ))
    }
}

#[test]
fn every_relative_link_resolves_inside_the_repository() {
    let root = repository_root();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("README.md")),
        "the README was not found under {}",
        root.display()
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in link_targets(&text) {
            checked += 1;
            if let Some(problem) = check(&root, file, &target) {
                let relative = file.strip_prefix(&root).unwrap_or(file);
                broken.push(format!("{}: {problem}", relative.display()));
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} links found: is the reader right?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn a_link_beside_the_repository_is_caught() {
    let root = repository_root();
    let readme = root.join("README.md");
    let targets = link_targets(
        "see [the story](../shared/CONTEXT.md), [docs](docs/why.md), `[not](a/link)` and\n\
         [web](https://example.com) [anchor](#usage)\n[ref]: ../elsewhere.md\n",
    );
    assert_eq!(
        targets,
        [
            "../shared/CONTEXT.md",
            "docs/why.md",
            "https://example.com",
            "#usage",
            "../elsewhere.md"
        ]
    );
    let problems: Vec<Option<String>> = targets.iter().map(|t| check(&root, &readme, t)).collect();
    assert!(
        problems[0]
            .as_deref()
            .is_some_and(|p| p.contains("outside"))
    );
    assert_eq!(problems[1], None);
    assert_eq!(problems[2], None);
    assert_eq!(problems[3], None);
    assert!(problems[4].is_some());
    assert!(
        check(&root, &readme, "docs/no-such-page.md").is_some_and(|p| p.contains("no such file"))
    );
}

/// Issue 26: the engine's map in docs/architecture.md ("Where to look") had drifted (it listed
/// `resolver.rs`, gone into `resolver/`, and left out `handover.rs` and `relay/adopt.rs`). Every
/// file and folder the table names must exist, and every module of the engine must be named.
#[test]
fn the_architecture_map_names_every_engine_module_and_nothing_else() {
    let root = repository_root();
    let src = root.join("crates/spliceway/src");
    let text = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let table = text
        .split("## Where to look")
        .nth(1)
        .expect("a \"Where to look\" section");
    let mut named = std::collections::BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let mut cells = row.split('|').skip(1);
        let (first, second) = (cells.next().unwrap_or(""), cells.next().unwrap_or(""));
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .filter(|t| t.ends_with(".rs") || t.ends_with('/'))
                .map(str::to_string)
                .collect()
        };
        for entry in ticked(first) {
            if entry.starts_with("crates/") {
                continue;
            }
            if let Some(dir) = entry.strip_suffix('/') {
                for file in ticked(second) {
                    named.insert(format!("{dir}/{file}"));
                }
            }
            named.insert(entry.trim_end_matches('/').to_string());
        }
    }
    let mut missing = Vec::new();
    for path in &named {
        if !src.join(path).exists() {
            missing.push(path.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "the map names what does not exist: {missing:?}"
    );
    let mut unnamed = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "lib.rs" {
            continue;
        }
        if !named.contains(&name) {
            unnamed.push(name.clone());
        }
        if path.is_dir() {
            for file in std::fs::read_dir(&path).unwrap() {
                let file = file.unwrap().file_name().to_string_lossy().to_string();
                // Unit tests of a folder module are not a part of its map.
                if file != "tests.rs" && !named.contains(&format!("{name}/{file}")) {
                    unnamed.push(format!("{name}/{file}"));
                }
            }
        }
    }
    assert!(
        unnamed.is_empty(),
        "engine modules the map does not name: {unnamed:?}"
    );
}

#[test]
fn an_anchor_names_a_heading_of_its_page() {
    let anchors = heading_anchors(
        "# Why one client stays above 0.5x nginx\n## `run`: the daemon\n```sh\n# not a heading\n```\n\
         ## Run\n## Run\n#hashtag\n",
    );
    for anchor in [
        "why-one-client-stays-above-05x-nginx",
        "run-the-daemon",
        "run",
        "run-1",
    ] {
        assert!(anchors.contains(anchor), "{anchor} in {anchors:?}");
    }
    assert!(!anchors.contains("not-a-heading"));
    assert!(!anchors.contains("hashtag"));

    let root = repository_root();
    let readme = root.join("README.md");
    assert_eq!(check(&root, &readme, "docs/udp.md#benchmark"), None);
    assert!(
        check(&root, &readme, "docs/udp.md#no-such-section")
            .is_some_and(|p| p.contains("no heading"))
    );
    assert!(check(&root, &readme, "#no-such-section-of-the-readme").is_some());
}
