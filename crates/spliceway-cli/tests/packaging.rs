//! What the packages install, read from the package metadata in this crate's Cargo.toml
//! (`[package.metadata.deb]` and `[package.metadata.generate-rpm]`), without building them
//! (packaging/test-packages.sh builds and installs them, as root): every relative link of the
//! installed README.md leads to a file installed beside it, and the man pages `spliceway man`
//! can print are all installed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn metadata() -> toml::Table {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let manifest: toml::Table = text.parse().unwrap();
    manifest["package"]["metadata"].as_table().unwrap().clone()
}

/// The files `source` names: itself, or the files of its directory matching one `*`.
fn expand(source: &Path) -> Vec<PathBuf> {
    let name = source.file_name().unwrap().to_string_lossy().into_owned();
    let Some((prefix, suffix)) = name.split_once('*') else {
        return vec![source.to_path_buf()];
    };
    let dir = source.parent().unwrap();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new(); // generated at package time (target/packaging/generated)
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(suffix) && n.len() >= prefix.len() + suffix.len()
        })
        .collect()
}

/// Where each asset's files are installed (paths without the leading `/`), with the source
/// as written, for assets generated at package time.
fn installed(assets: impl Iterator<Item = (PathBuf, String)>) -> (BTreeSet<String>, Vec<String>) {
    let mut paths = BTreeSet::new();
    let mut patterns = Vec::new();
    for (source, dest) in assets {
        let dest = dest.trim_start_matches('/').to_string();
        patterns.push(format!("{} -> {dest}", source.display()));
        for file in expand(&source) {
            let path = if dest.ends_with('/') {
                format!("{dest}{}", file.file_name().unwrap().to_string_lossy())
            } else {
                dest.clone()
            };
            paths.insert(path);
        }
    }
    (paths, patterns)
}

fn deb() -> (BTreeSet<String>, Vec<String>) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let assets = metadata()["deb"]["assets"].as_array().unwrap().clone();
    installed(assets.into_iter().map(|a| {
        let a = a.as_array().unwrap();
        (
            crate_dir.join(a[0].as_str().unwrap()),
            a[1].as_str().unwrap().to_string(),
        )
    }))
}

fn rpm() -> (BTreeSet<String>, Vec<String>) {
    let assets = metadata()["generate-rpm"]["assets"]
        .as_array()
        .unwrap()
        .clone();
    installed(assets.into_iter().map(|a| {
        (
            root().join(a["source"].as_str().unwrap()),
            a["dest"].as_str().unwrap().to_string(),
        )
    }))
}

/// The relative link targets of README.md, outside code, without anchors.
fn readme_links() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut links = BTreeSet::new();
    let mut fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let visible: String = line.split('`').step_by(2).collect();
        let mut rest = visible.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split('#').next().unwrap_or("").trim();
            if !target.is_empty() && !target.contains(':') {
                links.insert(target.to_string());
            }
            rest = &after[end..];
        }
    }
    links
}

/// Issue 25: the packages installed README.md, whose `docs/` links led nowhere.
#[test]
fn every_link_of_the_installed_readme_leads_to_an_installed_file() {
    let links = readme_links();
    assert!(links.contains("docs/operations.md"), "{links:?}");
    for (kind, (installed, _)) in [("deb", deb()), ("rpm", rpm())] {
        assert!(
            installed.contains("usr/share/doc/spliceway/README.md"),
            "{kind}"
        );
        let missing: Vec<&String> = links
            .iter()
            .filter(|l| !installed.contains(&format!("usr/share/doc/spliceway/{l}")))
            .collect();
        assert!(
            missing.is_empty(),
            "{kind}: README.md links to {missing:?}, not installed"
        );
    }
}

/// The man pages go to man1 and man5 in both packages (generated at package time).
#[test]
fn both_packages_install_the_man_pages_of_both_sections() {
    for (kind, (_, patterns)) in [("deb", deb()), ("rpm", rpm())] {
        for (generated, dest) in [
            ("generated/man/*.1.gz", "usr/share/man/man1/"),
            ("generated/man5/*.5.gz", "usr/share/man/man5/"),
        ] {
            assert!(
                patterns
                    .iter()
                    .any(|p| p.contains(generated) && p.ends_with(dest)),
                "{kind}: {generated} -> {dest} in {patterns:#?}"
            );
        }
    }
}
