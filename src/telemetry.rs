//! The bridge's Prometheus metrics, served at `/metrics`.
//!
//! Each bridge owns its own recorder, so several bridges in one process
//! (the tests start many) never mix their numbers. Every series written on
//! a hot path has its handle created once, here, and an update is one
//! atomic operation: no lookup, no allocation. Series keyed by a close code
//! are rarer (one per connection) and are looked up when they happen.

use std::time::Duration;

use ::metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram, with_local_recorder,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::close::Close;
use crate::envelope::{self, MessageType};
use crate::grpc::agent::Rejection;
use crate::outbox::Periodic;
use crate::websocket::request::Endpoint;

const OPEN: &str = "cherry_websocket_connections_open";
const OPENED: &str = "cherry_websocket_connections_opened_total";
const CLOSED: &str = "cherry_websocket_connections_closed_total";
const SLOW_CLOSES: &str = "cherry_websocket_slow_client_closes_total";
const SENT_MESSAGES: &str = "cherry_websocket_messages_sent_total";
const SENT_BYTES: &str = "cherry_websocket_bytes_sent_total";
const AGENT_STREAMS: &str = "cherry_agent_streams_open";
const AGENT_ACCEPTED: &str = "cherry_agent_messages_accepted_total";
const AGENT_REJECTED: &str = "cherry_agent_messages_rejected_total";
const MACHINES_KNOWN: &str = "cherry_machines_known";
const MACHINES_FRESH: &str = "cherry_machines_fresh";
const TICK_DURATION: &str = "cherry_tick_duration_seconds";

/// Upper bounds of the tick duration buckets: a tick concatenates
/// prepared JSON, so it should take microseconds to a few milliseconds.
const TICK_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

const ENDPOINTS: [Endpoint; 3] = [Endpoint::Subscribed, Endpoint::Account, Endpoint::Global];

/// How a WebSocket ended, as the `code` label of the closed counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The bridge closed it (or refused it at admission) with this close.
    Bridge(Close),
    /// The client sent the close; its code is the client's choice and
    /// would make the label unbounded, so it is not kept.
    Client,
    /// The connection broke without a close handshake.
    Lost,
}

impl Ending {
    fn label(self) -> &'static str {
        let close = match self {
            Ending::Client => return "client",
            Ending::Lost => return "lost",
            Ending::Bridge(close) => close,
        };
        match close.code() {
            1000 => "1000",
            1001 => "1001",
            1008 => "1008",
            1011 => "1011",
            1013 => "1013",
            4401 => "4401",
            4403 => "4403",
            _ => "other",
        }
    }
}

pub struct Metrics {
    /// Holds every series; the closed counter is looked up in it per close.
    recorder: PrometheusRecorder,
    /// Renders the exposition text and drains histogram samples.
    handle: PrometheusHandle,
    series: Series,
}

/// Handles to the series updated on hot paths, created once.
struct Series {
    /// Open WebSockets, by endpoint in [`ENDPOINTS`] order.
    open: [Gauge; 3],
    /// Admitted WebSockets, by endpoint in [`ENDPOINTS`] order.
    opened: [Counter; 3],
    /// Closes with 1013 for a backlog past the bound: the sign that some
    /// frontend cannot keep up.
    slow_closes: Counter,
    /// Frames written to WebSockets, by [`MessageType::index`].
    sent_messages: [Counter; 12],
    /// Their bytes (the JSON text), by [`MessageType::index`].
    sent_bytes: [Counter; 12],
    /// Streams that said hello; moved by the agent stream's reader.
    agent_streams: Gauge,
    /// Messages acknowledged, hello included.
    agent_accepted: Counter,
    /// Rejected agent messages, by [`Rejection::index`].
    agent_rejected: [Counter; 3],
    /// Set on every state tick from the registry's count, so it never
    /// drifts from what the registry holds.
    machines_known: Gauge,
    /// Likewise: machines DATA_DYNAMIC lists.
    machines_fresh: Gauge,
    /// Time one tick of each cadence takes, in [`Periodic::ALL`] order.
    tick_duration: [Histogram; 3],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(TICK_DURATION.to_owned()), TICK_BUCKETS)
            .expect("the tick buckets are not empty")
            .build_recorder();
        let series = with_local_recorder(&recorder, || {
            describe();
            Series {
                open: ENDPOINTS.map(|endpoint| gauge!(OPEN, "scope" => endpoint.name())),
                opened: ENDPOINTS.map(|endpoint| counter!(OPENED, "scope" => endpoint.name())),
                slow_closes: counter!(SLOW_CLOSES),
                sent_messages: MessageType::ALL
                    .map(|kind| counter!(SENT_MESSAGES, "type" => kind.as_str())),
                sent_bytes: MessageType::ALL
                    .map(|kind| counter!(SENT_BYTES, "type" => kind.as_str())),
                agent_streams: gauge!(AGENT_STREAMS),
                agent_accepted: counter!(AGENT_ACCEPTED),
                agent_rejected: Rejection::ALL
                    .map(|reason| counter!(AGENT_REJECTED, "reason" => reason.label())),
                machines_known: gauge!(MACHINES_KNOWN),
                machines_fresh: gauge!(MACHINES_FRESH),
                tick_duration: Periodic::ALL
                    .map(|kind| histogram!(TICK_DURATION, "type" => kind.message_type().as_str())),
            }
        });
        Metrics {
            handle: recorder.handle(),
            recorder,
            series,
        }
    }

    /// The exposition text for `/metrics`.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    pub fn connection_opened(&self, endpoint: Endpoint) {
        let index = endpoint_index(endpoint);
        self.series.opened[index].increment(1);
        self.series.open[index].increment(1.0);
    }

    /// An admitted WebSocket ended.
    pub fn connection_closed(&self, endpoint: Endpoint, ending: Ending) {
        self.series.open[endpoint_index(endpoint)].decrement(1.0);
        if ending == Ending::Bridge(Close::TooFarBehind) {
            self.series.slow_closes.increment(1);
        }
        self.count_close(endpoint, ending);
    }

    /// A WebSocket was refused at admission: closed, but never open.
    pub fn connection_refused(&self, endpoint: Endpoint, reason: Close) {
        self.count_close(endpoint, Ending::Bridge(reason));
    }

    fn count_close(&self, endpoint: Endpoint, ending: Ending) {
        with_local_recorder(&self.recorder, || {
            counter!(CLOSED, "scope" => endpoint.name(), "code" => ending.label()).increment(1);
        });
    }

    /// One frame went out on a WebSocket.
    // LIMITATION: counted when handed to the socket; a frame still in the
    // kernel's buffers when the connection breaks was counted anyway.
    pub fn frame_sent(&self, frame: &str) {
        let Some(kind) = envelope::type_of(frame) else {
            return;
        };
        self.series.sent_messages[kind.index()].increment(1);
        self.series.sent_bytes[kind.index()].increment(frame.len() as u64);
    }

    pub fn agent_stream_opened(&self) {
        self.series.agent_streams.increment(1.0);
    }

    pub fn agent_stream_closed(&self) {
        self.series.agent_streams.decrement(1.0);
    }

    pub fn agent_message_accepted(&self) {
        self.series.agent_accepted.increment(1);
    }

    pub fn agent_message_rejected(&self, reason: Rejection) {
        self.series.agent_rejected[reason.index()].increment(1);
    }

    /// Records one tick; a state tick also refreshes the machine gauges and
    /// drains histogram samples, so memory stays bounded without a scrape.
    pub fn tick(&self, kind: Periodic, took: Duration, machines: Option<(usize, usize)>) {
        self.series.tick_duration[kind.index()].record(took.as_secs_f64());
        if let Some((known, fresh)) = machines {
            self.series.machines_known.set(known as f64);
            self.series.machines_fresh.set(fresh as f64);
            self.handle.run_upkeep();
        }
    }
}

fn describe() {
    describe_gauge!(OPEN, "Open WebSockets, by scope.");
    describe_counter!(OPENED, "WebSockets admitted, by scope.");
    describe_counter!(
        CLOSED,
        "WebSockets ended, by scope and close code (`client`: closed by the client, \
         `lost`: broken); refusals at admission count here too."
    );
    describe_counter!(
        SLOW_CLOSES,
        "WebSockets closed with 1013 for falling behind."
    );
    describe_counter!(
        SENT_MESSAGES,
        "Frames written to WebSockets, by message type."
    );
    describe_counter!(
        SENT_BYTES,
        Unit::Bytes,
        "JSON bytes written to WebSockets, by message type."
    );
    describe_gauge!(AGENT_STREAMS, "Agent streams that said hello and are open.");
    describe_counter!(AGENT_ACCEPTED, "Agent messages accepted.");
    describe_counter!(AGENT_REJECTED, "Agent messages rejected, by reason.");
    describe_gauge!(MACHINES_KNOWN, "Machines the registry holds.");
    describe_gauge!(MACHINES_FRESH, "Machines whose live state is fresh.");
    describe_histogram!(
        TICK_DURATION,
        Unit::Seconds,
        "Time one tick takes to build and queue its bodies, by message type."
    );
}

fn endpoint_index(endpoint: Endpoint) -> usize {
    match endpoint {
        Endpoint::Subscribed => 0,
        Endpoint::Account => 1,
        Endpoint::Global => 2,
    }
}
