//! A connection's outbound queue: what the fan-out has handed to one
//! WebSocket and the socket has not written yet.
//!
//! Pushing never waits, so neither an agent nor the ticker ever waits for a
//! slow client. Events queue in order up to a bound; passing the bound asks
//! the connection to close with 1013. Periodic DATA_* messages are
//! latest-wins: each type has one slot, and a newer message replaces an
//! unsent older one. The replacement keeps the old one's place when no
//! event was queued after it; otherwise it goes to the back, so that a
//! periodic message never overtakes an event about the same machine (live
//! state before the CREATE that introduces the machine, say).

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::close::Close;
use crate::envelope::{Frame, MessageType};

/// The periodic message types, each with a latest-wins slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Periodic {
    State,
    Disks,
    Connections,
}

impl Periodic {
    pub const ALL: [Periodic; 3] = [Periodic::State, Periodic::Disks, Periodic::Connections];

    /// The position of this type in [`Periodic::ALL`], also its slot.
    pub fn index(self) -> usize {
        match self {
            Periodic::State => 0,
            Periodic::Disks => 1,
            Periodic::Connections => 2,
        }
    }

    fn slot(self) -> usize {
        self.index()
    }

    /// The message type this cadence sends.
    pub fn message_type(self) -> MessageType {
        match self {
            Periodic::State => MessageType::DataDynamic,
            Periodic::Disks => MessageType::DataDynamicDisks,
            Periodic::Connections => MessageType::DataDynamicConnections,
        }
    }
}

pub struct Outbox {
    queue: Mutex<Queue>,
    /// Woken on every push; the connection's writer waits on it.
    ready: Notify,
    /// Woken when a close is requested, so a writer blocked on a slow socket
    /// can give up.
    closing: Notify,
}

struct Queue {
    /// Position of the next message pushed; orders events and slots.
    next: u64,
    /// Positions below this hold the four connect messages, whose order
    /// is fixed: a newer periodic message never moves one of them.
    connect_end: u64,
    events: VecDeque<(u64, Frame)>,
    periodic: [Option<(u64, Frame)>; 3],
    /// How many unsent events are tolerated before the connection is closed.
    max_events: usize,
    /// Set once; everything still queued is dropped when it is.
    close: Option<Close>,
}

impl Queue {
    fn take_position(&mut self) -> u64 {
        let position = self.next;
        self.next += 1;
        position
    }
}

/// What a writer takes from the outbox in one go.
pub enum Batch {
    Frames(Vec<Frame>),
    Close(Close),
}

impl Outbox {
    /// An outbox holding a connection's four connect messages:
    /// DATA_STATIC, then the periodic ones in `Periodic::ALL` order.
    pub fn new(max_events: usize, data_static: Frame, periodic: [Frame; 3]) -> Self {
        let mut events = VecDeque::new();
        events.push_back((0, data_static));
        let mut slots = [None, None, None];
        for (position, (kind, frame)) in (1..).zip(Periodic::ALL.into_iter().zip(periodic)) {
            slots[kind.slot()] = Some((position, frame));
        }
        Outbox {
            queue: Mutex::new(Queue {
                next: 4,
                connect_end: 4,
                events,
                periodic: slots,
                max_events,
                close: None,
            }),
            ready: Notify::new(),
            closing: Notify::new(),
        }
    }

    /// Queues an event. Past the bound, the connection is asked to close with
    /// 1013 instead; the event is not lost silently, the connection ends.
    pub fn push_event(&self, frame: Frame) {
        let mut queue = self.lock();
        if queue.close.is_some() {
            return;
        }
        if queue.events.len() >= queue.max_events {
            queue.close = Some(Close::TooFarBehind);
            drop(queue);
            self.closing.notify_one();
            self.ready.notify_one();
            return;
        }
        let position = queue.take_position();
        queue.events.push_back((position, frame));
        drop(queue);
        self.ready.notify_one();
    }

    /// Puts a periodic message in its slot, replacing an unsent older one.
    pub fn push_periodic(&self, kind: Periodic, frame: Frame) {
        let mut queue = self.lock();
        if queue.close.is_some() {
            return;
        }
        let last_event = queue.events.back().map(|(position, _)| *position);
        let position = match queue.periodic[kind.slot()] {
            None => queue.take_position(),
            // Nothing queued after it: the newer message takes its place.
            Some((position, _)) if last_event.is_none_or(|last| last < position) => position,
            // A connect message stays, in its fixed order; the client is
            // still reading its snapshot and gets the next tick.
            Some((position, _)) if position < queue.connect_end => return,
            Some(_) => queue.take_position(),
        };
        queue.periodic[kind.slot()] = Some((position, frame));
        drop(queue);
        self.ready.notify_one();
    }

    /// Asks the connection to close; the first request wins.
    pub fn close(&self, reason: Close) {
        let mut queue = self.lock();
        if queue.close.is_none() {
            queue.close = Some(reason);
        }
        drop(queue);
        self.closing.notify_one();
        self.ready.notify_one();
    }

    /// Waits until something is queued, then takes all of it in order. A
    /// requested close comes before anything still queued.
    pub async fn next_batch(&self) -> Batch {
        loop {
            if let Some(batch) = self.take() {
                return batch;
            }
            self.ready.notified().await;
        }
    }

    /// Resolves once a close has been requested.
    pub async fn closing(&self) {
        loop {
            if self.lock().close.is_some() {
                return;
            }
            self.closing.notified().await;
        }
    }

    /// The requested close, if any.
    pub fn close_reason(&self) -> Option<Close> {
        self.lock().close
    }

    /// Number of unsent events; for tests and metrics.
    pub fn backlog(&self) -> usize {
        self.lock().events.len()
    }

    fn take(&self) -> Option<Batch> {
        let mut queue = self.lock();
        if let Some(reason) = queue.close {
            return Some(Batch::Close(reason));
        }
        let periodic: Vec<(u64, Frame)> =
            queue.periodic.iter_mut().filter_map(Option::take).collect();
        if queue.events.is_empty() && periodic.is_empty() {
            return None;
        }

        let mut items: Vec<(u64, Frame)> = queue.events.drain(..).collect();
        drop(queue);
        items.extend(periodic);
        items.sort_unstable_by_key(|(position, _)| *position);
        Some(Batch::Frames(
            items.into_iter().map(|(_, frame)| frame).collect(),
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves plain data behind; the
        // queue stays usable.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        Frame::from(text.to_owned())
    }

    /// An outbox whose connect messages were already written.
    async fn drained(max_events: usize) -> Outbox {
        let outbox = Outbox::new(
            max_events,
            frame("static"),
            [frame("state 0"), frame("disks 0"), frame("connections 0")],
        );
        frames(outbox.next_batch().await);
        outbox
    }

    fn frames(batch: Batch) -> Vec<String> {
        match batch {
            Batch::Frames(frames) => frames.iter().map(|f| f.as_str().to_owned()).collect(),
            Batch::Close(reason) => panic!("unexpected close {reason}"),
        }
    }

    #[tokio::test]
    async fn connect_messages_keep_their_order_whatever_comes_after() {
        let outbox = Outbox::new(
            8,
            frame("static"),
            [frame("state 0"), frame("disks 0"), frame("connections 0")],
        );
        // Replaced before anything else is queued: in place.
        outbox.push_periodic(Periodic::State, frame("state 1"));
        outbox.push_event(frame("create"));
        // After an event: the connect message stays; this tick is skipped.
        outbox.push_periodic(Periodic::Disks, frame("disks 1"));

        let sent = frames(outbox.next_batch().await);
        assert_eq!(
            sent,
            ["static", "state 1", "disks 0", "connections 0", "create"]
        );
    }

    #[tokio::test]
    async fn a_newer_periodic_message_never_overtakes_an_event() {
        let outbox = drained(8).await;
        outbox.push_periodic(Periodic::State, frame("state 1"));
        outbox.push_periodic(Periodic::State, frame("state 2"));
        outbox.push_event(frame("create"));
        outbox.push_periodic(Periodic::Disks, frame("disks"));
        outbox.push_periodic(Periodic::State, frame("state 3"));

        // One message per type, and the newest state after the event.
        let sent = frames(outbox.next_batch().await);
        assert_eq!(sent, ["create", "disks", "state 3"]);
    }

    #[tokio::test]
    async fn events_are_never_merged_and_passing_the_bound_closes_with_1013() {
        let outbox = drained(3).await;
        for index in 0..3 {
            outbox.push_event(frame(&format!("event {index}")));
        }
        assert_eq!(outbox.backlog(), 3);
        assert_eq!(outbox.close_reason(), None);

        outbox.push_event(frame("one too many"));
        assert_eq!(outbox.close_reason(), Some(Close::TooFarBehind));
        match outbox.next_batch().await {
            Batch::Close(reason) => assert_eq!(reason.code(), 1013),
            Batch::Frames(frames) => {
                panic!("expected the close first, got {} frames", frames.len())
            }
        }
    }

    #[tokio::test]
    async fn the_first_close_wins_and_later_pushes_are_dropped() {
        let outbox = drained(8).await;
        outbox.close(Close::AccountRemoved);
        outbox.close(Close::ShuttingDown);
        outbox.push_event(frame("late"));
        outbox.push_periodic(Periodic::State, frame("late"));
        assert_eq!(outbox.close_reason(), Some(Close::AccountRemoved));
        assert_eq!(outbox.backlog(), 0);
        outbox.closing().await;
    }
}
