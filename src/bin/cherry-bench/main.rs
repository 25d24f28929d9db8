//! `cherry-bench`: the load benchmark shipped with cherry-bridge.
//!
//! It starts the real `cherry-bridge serve` as a child process on free
//! loopback ports, drives it with real gRPC agent streams and real
//! WebSocket clients, then does the same against its own floor mode (a
//! minimal sender with no bridge logic, see `floor`), and prints each
//! figure beside its floor.

mod agents;
mod clients;
mod floor;
mod population;
mod process;
mod report;
mod scenarios;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use process::Programs;
use report::Report;
use scenarios::Scale;

#[derive(Parser, Debug)]
#[command(
    name = "cherry-bench",
    about = "Load benchmark for cherry-bridge, with a floor to compare against"
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,

    /// Scenarios to run; all of them when omitted.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,

    /// A scaled-down run of a few seconds per scenario.
    #[arg(long)]
    quick: bool,

    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,

    /// The `cherry-bridge` binary; by default the one next to this tool.
    #[arg(long)]
    bridge: Option<PathBuf>,

    /// Scheduling niceness for this tool and the processes it starts (the
    /// bridge and the floor alike), e.g. -10 on a machine shared with
    /// other work; lowering it needs privileges. Unchanged by default.
    #[arg(long, allow_hyphen_values = true)]
    nice: Option<i32>,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Serve as the floor (started by the bench itself).
    #[command(hide = true)]
    Floor {
        #[arg(long)]
        http_addr: SocketAddr,
        #[arg(long)]
        grpc_addr: SocketAddr,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Fanout,
    Ingest,
    Event,
    Storm,
    Memory,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime can be built");

    let result = match cli.mode {
        Some(Mode::Floor {
            http_addr,
            grpc_addr,
        }) => runtime.block_on(floor::run(http_addr, grpc_addr)),
        None => runtime.block_on(bench(&cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cherry-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(cli: &Cli) -> Result<(), String> {
    let programs = Programs::locate(cli.bridge.clone())?;
    let scale = if cli.quick { Scale::QUICK } else { Scale::FULL };
    let selected = |scenario| cli.scenario.is_empty() || cli.scenario.contains(&scenario);

    let mut notes = Vec::new();
    let (fd_limit, refused) = process::raise_fd_limit();
    match refused {
        Some(why) => notes.push(format!(
            "could not raise the fd limit above {fd_limit}: {why}"
        )),
        None => notes.push(format!(
            "fd limit {fd_limit} for this tool and its children"
        )),
    }
    if let Some(nice) = cli.nice {
        match process::set_niceness(nice) {
            Ok(()) => notes.push(format!("ran at niceness {nice}, bridge and floor alike")),
            Err(why) => notes.push(format!("could not set niceness {nice}: {why}")),
        }
    }
    let sockets = scale.account_sockets + scale.subscribed_sockets + scale.global_sockets;
    if (fd_limit as usize) < sockets.max(scale.storm_sockets) + 100 {
        notes.push(format!(
            "fd limit {fd_limit} is below the {sockets} sockets the largest scenario opens"
        ));
    }

    let load_before = load_average();
    let mut rows = Vec::new();
    if selected(Scenario::Fanout) {
        progress("fan-out");
        rows.extend(scenarios::fan_out(&programs, scale, &mut notes).await?);
    }
    if selected(Scenario::Ingest) {
        progress("ingest");
        rows.extend(scenarios::ingest(&programs, scale).await?);
    }
    if selected(Scenario::Event) {
        progress("event latency");
        rows.extend(scenarios::event_latency(&programs, scale, &mut notes).await?);
    }
    if selected(Scenario::Storm) || selected(Scenario::Memory) {
        progress("connect storm and memory");
        let storm = scenarios::storm(&programs, scale, &mut notes).await?;
        if selected(Scenario::Storm) {
            rows.extend(storm.rows_storm);
        }
        if selected(Scenario::Memory) {
            rows.extend(storm.rows_memory);
        }
    }

    // Other work on the machine competes with both the bridge and the
    // clients; the figures are only comparable between quiet runs.
    notes.push(format!(
        "load average (1, 5, 15 min) at start: {load_before}; at end: {}",
        load_average()
    ));
    let report = Report {
        mode: if cli.quick { "quick" } else { "full" },
        fd_limit,
        rows,
        notes,
    };
    if cli.json {
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// The first three fields of `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn progress(scenario: &str) {
    eprintln!("cherry-bench: running {scenario} (bridge, then floor)");
}
