//! Checks of the repository as a whole, not of one crate: they live in `tests/` and run with
//! `cargo test --workspace` (the README's test command), or alone with
//! `cargo test -p spliceway-repo-checks`.
//!
//! - `module_graph.rs`: no crate's modules import each other in a cycle (the layers of
//!   docs/architecture.md).
//! - `docs_links.rs`: every relative Markdown link in the repository resolves.
//! - `grafana_dashboard.rs`: packaging/grafana/spliceway.json names only metrics a live
//!   `spliceway run` exports. It runs the `spliceway` binary that `cargo test --workspace`
//!   builds beside this crate's test binaries (or the one `SPLICEWAY_BIN` names).
//! - `kubernetes.rs`: the manifests in packaging/kubernetes parse and agree with each other and
//!   with the configuration they carry.
