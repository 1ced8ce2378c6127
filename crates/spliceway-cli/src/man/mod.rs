//! `spliceway man [PAGE]`: the man pages. Each command's page is clap_mangen's NAME, SYNOPSIS
//! and OPTIONS, rendered from the command line's own definitions, with the hand-written
//! sections of `pages.rs` (DESCRIPTION, FILES, SIGNALS, EXIT STATUS, EXAMPLES, SEE ALSO) around
//! them; spliceway.toml(5) is rendered from the configuration crate's table of keys
//! (`config_page.rs`). The pages that exist are the ones `pages.rs` describes, plus
//! spliceway.toml: clap's `help` and this `man` command have none.

mod config_page;
mod pages;

use std::io::Write;

use anyhow::Context as _;
use clap::CommandFactory;
use roff::{Roff, bold, roman};

use crate::cli::Cli;
use crate::exit;
use pages::{Page, section};

/// The name that prints spliceway.toml(5).
pub const CONFIG_PAGE: &str = "spliceway.toml";

/// Prints `page` (a command's name, `spliceway.toml`, or the main page when `None`).
pub fn print(page: Option<&str>) -> anyhow::Result<()> {
    let text = render(page)?;
    std::io::stdout()
        .write_all(&text)
        .context("writing the man page")
}

/// The names `spliceway man` takes, for messages.
fn names() -> Vec<&'static str> {
    pages::PAGES
        .iter()
        .skip(1)
        .map(|p| p.name)
        .chain([CONFIG_PAGE])
        .collect()
}

/// The roff source of `page`.
pub fn render(page: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let version = format!("spliceway {}", env!("CARGO_PKG_VERSION"));
    if page == Some(CONFIG_PAGE) {
        return Ok(config_page::render(&version).into_bytes());
    }
    let name = page.unwrap_or("spliceway");
    let hand = pages::page(name).filter(|_| page != Some("spliceway"));
    let mut cli = Cli::command();
    cli.build();
    let command = match page {
        None => Some(cli.clone()),
        Some(name) => cli
            .find_subcommand(name)
            .map(|sub| sub.clone().name(format!("spliceway-{name}"))),
    };
    let (Some(hand), Some(command)) = (hand, command) else {
        return Err(exit::usage(anyhow::anyhow!(
            "no man page {name:?} (pages: {})",
            names().join(", ")
        )));
    };
    let man = clap_mangen::Man::new(command)
        .section("1")
        .source(version)
        .manual("spliceway");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    let mut roff = Roff::new();
    section(&mut roff, "DESCRIPTION", hand.description);
    write_roff(&mut out, &roff)?;
    man.render_options_section(&mut out)?;
    let mut roff = Roff::new();
    if page.is_none() {
        commands(&mut roff, &cli);
    }
    for (title, blocks) in hand.sections {
        section(&mut roff, title, blocks);
    }
    see_also(&mut roff, hand);
    write_roff(&mut out, &roff)?;
    Ok(out)
}

/// Appends `roff`'s lines (with its preamble for apostrophes again: harmless, and the
/// apostrophes of the hand-written text print as such).
fn write_roff(out: &mut Vec<u8>, roff: &Roff) -> std::io::Result<()> {
    out.write_all(roff.render().as_bytes())
}

/// COMMANDS of the main page: each command with a page, and what it does.
fn commands(roff: &mut Roff, cli: &clap::Command) {
    roff.control("SH", ["COMMANDS"]);
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        if pages::page(name).is_none() {
            continue;
        }
        roff.control("TP", []);
        roff.text([bold(format!("spliceway {name}"))]);
        if let Some(about) = sub.get_about() {
            roff.text([roman(format!("{about}. See spliceway-{name}(1)."))]);
        }
    }
}

/// SEE ALSO, one page a line (`\fBspliceway\-relay\fR(1),`), the lines
/// packaging/build-packages.sh reads to know which pages to install.
fn see_also(roff: &mut Roff, page: &Page) {
    roff.control("SH", ["SEE ALSO"]);
    let last = page.see_also.len().saturating_sub(1);
    for (i, (name, section)) in page.see_also.iter().enumerate() {
        let comma = if i < last { "," } else { "" };
        roff.text([bold(*name), roman(format!("({section}){comma}"))]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every page a SEE ALSO names in spliceway's own namespace can be printed, and every
    /// command shown in the main page has a page.
    #[test]
    fn every_page_named_exists() {
        for page in pages::PAGES {
            for (name, _) in page.see_also {
                if let Some(command) = name.strip_prefix("spliceway-") {
                    assert!(pages::page(command).is_some(), "{name} in {}", page.name);
                }
            }
        }
        let cli = Cli::command();
        for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = sub.get_name();
            if name != "man" {
                assert!(pages::page(name).is_some(), "no page for {name}");
            }
        }
    }
}
