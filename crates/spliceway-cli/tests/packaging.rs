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
        return Vec::new(); // generated at package time (packaging/generated)
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

/// Issue 25: the image ran as the unprivileged user 65532 with a configuration listening on
/// 443, which that user cannot bind (Docker's `--cap-add` gives a non-root process no ambient
/// capability). The image's own configuration listens on unprivileged ports, which the
/// Dockerfile installs and exposes.
#[test]
fn the_container_image_listens_on_ports_its_user_may_bind() {
    let path = root().join("packaging/container.toml");
    let config = spliceway_config::Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let dockerfile = std::fs::read_to_string(root().join("packaging/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(
            "install -D -m 0644 packaging/container.toml /out/etc/spliceway/spliceway.toml"
        ),
        "the image's configuration is packaging/container.toml"
    );
    assert!(dockerfile.contains("FROM gcr.io/distroless/cc-debian12:nonroot"));
    let exposed: BTreeSet<u16> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    let mut ports = BTreeSet::new();
    for route in config.routes().unwrap() {
        for addr in route.listen_addrs() {
            assert!(addr.port() >= 1024, "the user 65532 cannot bind {addr}");
            ports.insert(addr.port());
        }
        assert!(
            !route.access_list().allow.is_empty(),
            "route {:?} relays only the networks it allows",
            route.name()
        );
    }
    ports.insert(config.metrics().expect("metrics in the image").port());
    assert_eq!(
        exposed, ports,
        "EXPOSE lists the ports the configuration listens on"
    );
    assert!(
        dockerfile.contains("-p 443:8443"),
        "the run line publishes 8443 as 443"
    );
}
