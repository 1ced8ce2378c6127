//! The `spliceway` command. It only turns arguments and configuration into calls to the
//! `spliceway` library (and, for `bench`, `sink`, `soak` and `corrupting-relay`, to `spliceway-bench`);
//! see `cli.rs` for the definitions and the README for usage.

mod bench_cmd;
mod check_cmd;
mod cli;
mod control;
mod exit;
mod handoff;
mod limits;
mod logging;
mod man;
mod metrics;
mod privileges;
mod readiness;
mod relay_cmd;
mod run_cmd;
mod signals;
mod socket_activation;
mod succession;
mod takeover;
mod upgrade;
mod upgrade_cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 on usage errors, 0 for --help/--version
    let result = match cli.command {
        Command::Relay(args) => relay_cmd::run(*args),
        Command::Run(args) => run_cmd::run(args),
        Command::Check(args) => check_cmd::run(args),
        Command::Upgrade(args) => upgrade_cmd::run(args),
        Command::Bench(args) => bench_cmd::bench(*args),
        Command::Sink { args, log } => bench_cmd::sink(args, log),
        Command::CorruptingRelay(args) => spliceway_bench::run_corrupting_relay(args),
        Command::Soak(args) => bench_cmd::soak(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "spliceway",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { page } => man::print(page.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => {
            eprintln!("spliceway: error: {error:#}");
            ExitCode::from(exit::status_of(&error))
        }
    }
}
