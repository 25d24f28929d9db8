//! The five scenarios. Each runs against the bridge first, then against the
//! floor with the same sockets and the frame sizes the bridge produced, and
//! returns its rows of the report.

use std::time::Duration;

use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use crate::agents::{self, Stream};
use crate::clients::{Fleet, Record, Scope, Spec};
use crate::population::Population;
use crate::process::{Kind, Programs, Target};
use crate::report::{Row, Target as Goal, quantile};
use crate::wire::Kind as FrameKind;

/// How large a run is.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub machines: usize,
    pub accounts: usize,
    pub account_sockets: usize,
    pub subscribed_sockets: usize,
    pub global_sockets: usize,
    /// How long fan-out is measured.
    pub window: Duration,
    pub ingest_streams: usize,
    pub ingest_window: Duration,
    pub event_sockets: usize,
    pub events: usize,
    pub storm_sockets: usize,
}

impl Scale {
    /// The sizes of the project's performance issue.
    pub const FULL: Scale = Scale {
        machines: 1_000,
        accounts: 2_500,
        account_sockets: 10_000,
        subscribed_sockets: 1_000,
        global_sockets: 50,
        window: Duration::from_secs(30),
        ingest_streams: 4,
        ingest_window: Duration::from_secs(10),
        event_sockets: 1_000,
        events: 20,
        storm_sockets: 10_000,
    };

    /// A run of a few seconds per scenario, for smoke tests.
    pub const QUICK: Scale = Scale {
        machines: 100,
        accounts: 250,
        account_sockets: 500,
        subscribed_sockets: 100,
        global_sockets: 5,
        window: Duration::from_secs(4),
        ingest_streams: 4,
        ingest_window: Duration::from_secs(2),
        event_sockets: 99,
        events: 5,
        storm_sockets: 500,
    };
}

/// Agent streams that feed the fan-out's machines.
const REPORTING_AGENTS: usize = 10;

/// Handshakes in progress at once outside the connect storm, so that
/// setting up a scenario does not become a storm of its own.
const SETUP_HANDSHAKES: usize = 256;

/// Fan-out ticks whose server timestamps lie closer than this belong to
/// the same tick.
const TICK_GAP_US: i64 = 300_000;

/// A DATA_DYNAMIC that arrives later than this after the previous one means
/// a tick was missed.
const MISSED_AFTER_MS: f64 = 1_100.0;

const READY_WAIT: Duration = Duration::from_secs(120);

/// CPU time this tool has used so far.
fn own_cpu() -> Duration {
    crate::process::cpu_time(std::process::id()).unwrap_or_default()
}

/// Starts a scenario's target.
async fn start(kind: Kind, programs: &Programs, label: &str) -> Result<Target, String> {
    let programs = programs.clone();
    let label = label.to_owned();
    tokio::task::spawn_blocking(move || Target::start(kind, &programs, &label))
        .await
        .map_err(|e| format!("starting the target panicked: {e}"))?
}

/// Stops a target without blocking the runtime.
async fn stop(target: Target) {
    let _ = tokio::task::spawn_blocking(move || drop(target)).await;
}

fn account_target(population: &Population, account: usize) -> String {
    format!(
        "/ws/machines/account?access_token={}",
        population.tokens[account]
    )
}

fn subscribed_target(population: &Population, machine: usize) -> String {
    let account = population.account_of(machine);
    format!(
        "/ws/machines/subscribed?access_token={}&machine_uuid={}",
        population.tokens[account], population.machines[machine]
    )
}

fn global_target(population: &Population) -> String {
    format!(
        "/ws/machines/global?access_token={}",
        population.admin_token
    )
}

/// The floor's specs: the same sockets, asking for what the bridge sent.
fn floor_specs(records: &[Record]) -> Vec<Spec> {
    records
        .iter()
        .map(|record| Spec {
            scope: record.scope,
            target: record.floor_target(),
        })
        .collect()
}

fn failures(records: &[Record]) -> usize {
    records.iter().filter(|r| r.failure.is_some()).count()
}

fn first_failure(records: &[Record]) -> Option<String> {
    records.iter().find_map(|r| r.failure.clone())
}

// ----- fan-out ---------------------------------------------------------------

/// What one fan-out run measured.
struct FanOut {
    /// Per scope: tick-to-client delays (ms) and the longest DATA_DYNAMIC
    /// inter-arrival (ms), with the count of missed ticks.
    delays: Vec<(Scope, Vec<f64>, f64, usize)>,
    messages_per_second: f64,
    bytes_per_second: f64,
    cpu_percent: f64,
    /// This tool's own CPU over the window: the clients and agents.
    client_cpu_percent: f64,
    rss_mib: f64,
    failed: usize,
}

pub async fn fan_out(
    programs: &Programs,
    scale: Scale,
    notes: &mut Vec<String>,
) -> Result<Vec<Row>, String> {
    let population = Population::new(scale.machines, scale.accounts);
    let mut specs = Vec::new();
    for index in 0..scale.account_sockets {
        let target = account_target(&population, index % scale.accounts);
        specs.push(Spec {
            scope: Scope::Account,
            target,
        });
    }
    for index in 0..scale.subscribed_sockets {
        let target = subscribed_target(&population, index % scale.machines);
        specs.push(Spec {
            scope: Scope::Subscribed,
            target,
        });
    }
    for _ in 0..scale.global_sockets {
        specs.push(Spec {
            scope: Scope::Global,
            target: global_target(&population),
        });
    }

    let (bridge, records) = fan_out_run(Kind::Bridge, programs, scale, &population, &specs).await?;
    let (floor, _) = fan_out_run(
        Kind::Floor,
        programs,
        scale,
        &population,
        &floor_specs(&records),
    )
    .await?;
    if bridge.failed > 0 {
        notes.push(format!(
            "fan-out: {} bridge sockets ended early ({})",
            bridge.failed,
            first_failure(&records).unwrap_or_default()
        ));
    }

    let mut rows = Vec::new();
    for ((scope, mut delays, longest, missed), (_, mut floor_delays, floor_longest, _)) in
        bridge.delays.into_iter().zip(floor.delays)
    {
        let name = scope.name();
        for (label, q, goal) in [
            ("p50", 0.5, Goal::None),
            ("p99", 0.99, Goal::RatioAtMost(1.3)),
            ("max", 1.0, Goal::RatioAtMost(1.3)),
        ] {
            rows.push(Row {
                scenario: "fan-out",
                figure: format!("{name} tick-to-client {label}"),
                unit: "ms",
                bridge: quantile(&mut delays, q),
                floor: Some(quantile(&mut floor_delays, q)),
                target: goal,
            });
        }
        rows.push(Row {
            scenario: "fan-out",
            figure: format!("{name} longest DATA_DYNAMIC gap"),
            unit: "ms",
            bridge: longest,
            floor: Some(floor_longest),
            target: Goal::AtMost(MISSED_AFTER_MS),
        });
        rows.push(Row {
            scenario: "fan-out",
            figure: format!("{name} missed ticks"),
            unit: "count",
            bridge: missed as f64,
            floor: None,
            target: Goal::AtMost(0.0),
        });
    }
    for (figure, unit, value, floor_value) in [
        (
            "messages per second",
            "msg/s",
            bridge.messages_per_second,
            floor.messages_per_second,
        ),
        (
            "bytes per second",
            "MiB/s",
            bridge.bytes_per_second,
            floor.bytes_per_second,
        ),
        (
            "server CPU",
            "% of a core",
            bridge.cpu_percent,
            floor.cpu_percent,
        ),
        ("server RSS", "MiB", bridge.rss_mib, floor.rss_mib),
        (
            "bench clients' CPU",
            "% of a core",
            bridge.client_cpu_percent,
            floor.client_cpu_percent,
        ),
    ] {
        rows.push(Row {
            scenario: "fan-out",
            figure: figure.to_owned(),
            unit,
            bridge: value,
            floor: Some(floor_value),
            target: Goal::None,
        });
    }
    Ok(rows)
}

async fn fan_out_run(
    kind: Kind,
    programs: &Programs,
    scale: Scale,
    population: &Population,
    specs: &[Spec],
) -> Result<(FanOut, Vec<Record>), String> {
    let target = start(kind, programs, "fanout").await?;
    if kind == Kind::Bridge {
        let (_, control) = agents::connect(target.grpc).await?;
        population.upsert(&control).await?;
    }
    let reporting = CancellationToken::new();
    let reporters = agents::report_every_second(
        target.grpc,
        &population.machines,
        REPORTING_AGENTS,
        reporting.clone(),
    )
    .await?;
    // Let every machine's state arrive once, so that it is fresh.
    sleep(Duration::from_millis(1_500)).await;

    let fleet = Fleet::launch(target.http, specs, Some(SETUP_HANDSHAKES));
    if !fleet.wait_ready(READY_WAIT).await {
        let ready = fleet.ready();
        let records = fleet.finish().await;
        return Err(format!(
            "fan-out ({}): only {ready} of {} sockets got their connect messages ({}); see {}",
            kind.name(),
            specs.len(),
            first_failure(&records).unwrap_or_default(),
            target.log.display()
        ));
    }
    // A few ticks to settle before measuring.
    sleep(Duration::from_secs(3)).await;

    let cpu_before = target.cpu();
    let own_cpu_before = own_cpu();
    let from_us = crate::wire::now_us();
    let started = tokio::time::Instant::now();
    sleep(scale.window).await;
    let to_us = crate::wire::now_us();
    let elapsed = started.elapsed();
    let cpu = target.cpu().saturating_sub(cpu_before);
    let own_cpu = own_cpu().saturating_sub(own_cpu_before);
    let rss_kib = target.rss_kib();

    let records = fleet.finish().await;
    reporting.cancel();
    for reporter in reporters {
        let _ = reporter.await;
    }
    stop(target).await;

    let measured = FanOut {
        delays: tick_delays(&records, from_us, to_us),
        messages_per_second: records
            .iter()
            .flat_map(|r| r.later())
            .filter(|a| (from_us..to_us).contains(&a.at_us))
            .count() as f64
            / elapsed.as_secs_f64(),
        bytes_per_second: records
            .iter()
            .flat_map(|r| r.later())
            .filter(|a| (from_us..to_us).contains(&a.at_us))
            .map(|a| f64::from(a.len))
            .sum::<f64>()
            / elapsed.as_secs_f64()
            / (1024.0 * 1024.0),
        cpu_percent: cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0,
        client_cpu_percent: own_cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0,
        rss_mib: rss_kib as f64 / 1024.0,
        failed: failures(&records),
    };
    Ok((measured, records))
}

/// Per scope: the delay from each tick to each DATA_DYNAMIC arriving within
/// the window, the longest gap between two of them on one socket, and how
/// many gaps exceeded a tick and a tenth.
///
/// A tick's moment is the earliest server timestamp of its frames: the
/// bridge stamps each scope's frame when it builds it, so measuring from the
/// first one also counts the time spent building the others.
fn tick_delays(records: &[Record], from_us: i64, to_us: i64) -> Vec<(Scope, Vec<f64>, f64, usize)> {
    let in_window = |at: i64| (from_us..to_us).contains(&at);
    let mut stamps: Vec<i64> = records
        .iter()
        .flat_map(|r| r.later())
        .filter(|a| a.kind == FrameKind::State && in_window(a.at_us))
        .filter_map(|a| a.stamped_us)
        .collect();
    stamps.sort_unstable();
    let mut tick_starts: Vec<i64> = Vec::new();
    for stamp in stamps {
        if tick_starts
            .last()
            .is_none_or(|last| stamp - last > TICK_GAP_US)
        {
            tick_starts.push(stamp);
        }
    }
    // `tick_starts` now holds the first stamp of each cluster, provided no
    // single tick spans more than the gap between its own frames; ticks are
    // a second apart, far wider than the gap.
    let tick_of = |stamp: i64| {
        let index = tick_starts.partition_point(|start| *start <= stamp);
        tick_starts[index.saturating_sub(1)]
    };

    Scope::ALL
        .iter()
        .map(|scope| {
            let mut delays = Vec::new();
            let mut longest: f64 = 0.0;
            let mut missed = 0;
            for record in records.iter().filter(|r| r.scope == *scope) {
                let states = record.later().iter().filter(|a| a.kind == FrameKind::State);
                let mut previous: Option<i64> = None;
                for arrival in states.filter(|a| in_window(a.at_us)) {
                    if let Some(stamp) = arrival.stamped_us {
                        delays.push((arrival.at_us - tick_of(stamp)) as f64 / 1_000.0);
                    }
                    if let Some(previous) = previous {
                        let gap = (arrival.at_us - previous) as f64 / 1_000.0;
                        longest = longest.max(gap);
                        if gap > MISSED_AFTER_MS {
                            missed += 1;
                        }
                    }
                    previous = Some(arrival.at_us);
                }
            }
            (*scope, delays, longest, missed)
        })
        .collect()
}

// ----- ingest ----------------------------------------------------------------

pub async fn ingest(programs: &Programs, scale: Scale) -> Result<Vec<Row>, String> {
    let population = Population::new(scale.machines, 1);
    let mut rates = Vec::new();
    for kind in [Kind::Bridge, Kind::Floor] {
        let target = start(kind, programs, "ingest").await?;
        let rate = agents::flood(
            target.grpc,
            &population.machines,
            scale.ingest_streams,
            scale.ingest_window,
        )
        .await;
        stop(target).await;
        rates.push(rate?);
    }
    Ok(vec![Row {
        scenario: "ingest",
        figure: format!("agent messages accepted, {} streams", scale.ingest_streams),
        unit: "msg/s",
        bridge: rates[0],
        floor: Some(rates[1]),
        target: Goal::RatioAtLeast(0.5),
    }])
}

// ----- event latency -----------------------------------------------------------

pub async fn event_latency(
    programs: &Programs,
    scale: Scale,
    notes: &mut Vec<String>,
) -> Result<Vec<Row>, String> {
    let population = Population::new(1, 1);
    let third = scale.event_sockets / 3;
    let mut specs = Vec::new();
    for index in 0..scale.event_sockets {
        let (scope, target) = match index % 3 {
            0 => (Scope::Account, account_target(&population, 0)),
            1 => (Scope::Subscribed, subscribed_target(&population, 0)),
            _ => (Scope::Global, global_target(&population)),
        };
        specs.push(Spec { scope, target });
    }
    debug_assert!(third > 0 || scale.event_sockets < 3);

    let (mut bridge, records) =
        event_run(Kind::Bridge, programs, scale, &population, &specs).await?;
    let (mut floor, _) = event_run(
        Kind::Floor,
        programs,
        scale,
        &population,
        &floor_specs(&records),
    )
    .await?;
    let expected = scale.event_sockets * scale.events;
    if bridge.len() < expected {
        notes.push(format!(
            "event latency: {} of {expected} deliveries arrived at the bridge's clients",
            bridge.len()
        ));
    }
    Ok([
        ("p50", 0.5, Goal::None),
        ("p99", 0.99, Goal::RatioAtMost(1.3)),
        ("max", 1.0, Goal::None),
    ]
    .into_iter()
    .map(|(label, q, target)| Row {
        scenario: "event",
        figure: format!("{} sockets, all scopes, {label}", scale.event_sockets),
        unit: "ms",
        bridge: quantile(&mut bridge, q),
        floor: Some(quantile(&mut floor, q)),
        target,
    })
    .collect())
}

/// Delays (ms) from sending each event over gRPC to its arrival at each
/// client, and what the clients saw.
async fn event_run(
    kind: Kind,
    programs: &Programs,
    scale: Scale,
    population: &Population,
    specs: &[Spec],
) -> Result<(Vec<f64>, Vec<Record>), String> {
    let target = start(kind, programs, "event").await?;
    if kind == Kind::Bridge {
        let (_, control) = agents::connect(target.grpc).await?;
        population.upsert(&control).await?;
    }
    let mut agent = Stream::open(target.grpc, "bench-events".to_owned()).await?;
    agent.announce(&population.machines).await?;
    agent.settle(agent.sent(), Duration::from_secs(10)).await;

    let fleet = Fleet::launch(target.http, specs, Some(SETUP_HANDSHAKES));
    if !fleet.wait_ready(READY_WAIT).await {
        let records = fleet.finish().await;
        return Err(format!(
            "event ({}): sockets did not get their connect messages ({})",
            kind.name(),
            first_failure(&records).unwrap_or_default()
        ));
    }
    sleep(Duration::from_secs(1)).await;

    let machine = population.machines[0];
    let mut sent_us = Vec::with_capacity(scale.events);
    for _ in 0..scale.events {
        sent_us.push(crate::wire::now_us());
        agent.send(agents::event(&machine)).await?;
        // Apart enough that one event is delivered before the next.
        sleep(Duration::from_millis(250)).await;
    }
    sleep(Duration::from_secs(1)).await;
    let records = fleet.finish().await;
    stop(target).await;

    let mut delays = Vec::new();
    for record in &records {
        let events = record
            .later()
            .iter()
            .filter(|a| a.kind == FrameKind::Lifecycle);
        for (arrival, sent) in events.zip(&sent_us) {
            delays.push((arrival.at_us - sent) as f64 / 1_000.0);
        }
    }
    Ok((delays, records))
}

// ----- connect storm and memory ---------------------------------------------------

/// What the storm measures; memory is read once the storm has settled.
pub struct Storm {
    pub rows_storm: Vec<Row>,
    pub rows_memory: Vec<Row>,
}

pub async fn storm(
    programs: &Programs,
    scale: Scale,
    notes: &mut Vec<String>,
) -> Result<Storm, String> {
    let population = Population::new(scale.machines, scale.accounts);
    let specs: Vec<Spec> = (0..scale.storm_sockets)
        .map(|index| Spec {
            scope: Scope::Account,
            target: account_target(&population, index % scale.accounts),
        })
        .collect();
    let (bridge, records) = storm_run(Kind::Bridge, programs, &population, &specs).await?;
    let (floor, _) = storm_run(Kind::Floor, programs, &population, &floor_specs(&records)).await?;
    if bridge.ready < specs.len() {
        notes.push(format!(
            "connect storm: {} of {} bridge sockets got all four connect messages ({})",
            bridge.ready,
            specs.len(),
            first_failure(&records).unwrap_or_default()
        ));
    }
    let count = specs.len();
    Ok(Storm {
        rows_storm: vec![
            Row {
                scenario: "storm",
                figure: format!("{count} sockets, all four connect messages"),
                unit: "ms",
                bridge: bridge.all_ready_ms,
                floor: Some(floor.all_ready_ms),
                target: Goal::AtMost(5_000.0),
            },
            Row {
                scenario: "storm",
                figure: format!("{count} sockets, median socket ready"),
                unit: "ms",
                bridge: bridge.median_ready_ms,
                floor: Some(floor.median_ready_ms),
                target: Goal::None,
            },
        ],
        rows_memory: vec![Row {
            scenario: "memory",
            figure: format!("RSS per idle socket at {count}"),
            unit: "KiB",
            bridge: bridge.kib_per_socket,
            floor: Some(floor.kib_per_socket),
            target: Goal::AtMost(16.0),
        }],
    })
}

struct StormRun {
    ready: usize,
    all_ready_ms: f64,
    median_ready_ms: f64,
    kib_per_socket: f64,
}

async fn storm_run(
    kind: Kind,
    programs: &Programs,
    population: &Population,
    specs: &[Spec],
) -> Result<(StormRun, Vec<Record>), String> {
    let target = start(kind, programs, "storm").await?;
    if kind == Kind::Bridge {
        let (_, control) = agents::connect(target.grpc).await?;
        population.upsert(&control).await?;
    }
    sleep(Duration::from_secs(1)).await;
    let rss_before = target.rss_kib();

    let launched_us = crate::wire::now_us();
    let fleet = Fleet::launch(target.http, specs, None);
    fleet.wait_ready(Duration::from_secs(60)).await;
    let ready = fleet.ready();
    // Idle: connected, authenticated, past the connect messages.
    sleep(Duration::from_secs(3)).await;
    let rss_after = target.rss_kib();
    let records = fleet.finish().await;
    stop(target).await;

    let mut ready_ms: Vec<f64> = records
        .iter()
        .filter_map(|r| r.ready_us())
        .map(|at| (at - launched_us) as f64 / 1_000.0)
        .collect();
    let all_ready_ms = if ready == specs.len() {
        quantile(&mut ready_ms, 1.0)
    } else {
        f64::INFINITY
    };
    let run = StormRun {
        ready,
        all_ready_ms,
        median_ready_ms: quantile(&mut ready_ms, 0.5),
        kib_per_socket: rss_after.saturating_sub(rss_before) as f64 / ready.max(1) as f64,
    };
    Ok((run, records))
}
