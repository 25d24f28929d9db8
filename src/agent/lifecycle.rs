//! Lifecycle events from the phases the agent observes between two polls
//! of libvirt: where a machine was, where it is now, and what the
//! frontends should be told happened in between.
//!
//! Polling, not libvirt's domain event callbacks: the `virt` crate has no
//! safe binding for them, and libvirt has no "start requested" event
//! either, so callbacks would still need this mapping. A transition seen
//! between two polls is the same fact, and a reconnect to libvirt can
//! start from "unknown" instead of replaying what it missed.

use crate::grpc::proto::LifecycleKind;

/// Where a machine is in its life, as far as the frontends care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Defined but not running.
    Off,
    /// Being started (libvirt: paused while starting up).
    Starting,
    /// Running, including paused or suspended by someone.
    Running,
    /// Being shut down on the guest's side.
    Stopping,
    /// Stopped because it failed or crashed.
    Failed,
}

impl Phase {
    /// Whether the machine's guest exists right now.
    pub fn active(self) -> bool {
        matches!(self, Phase::Running | Phase::Stopping)
    }

    /// Starting or stopping.
    pub fn loading(self) -> bool {
        matches!(self, Phase::Starting | Phase::Stopping)
    }
}

/// One event to publish, with its error for the two FAIL kinds.
pub type Event = (LifecycleKind, Option<String>);

/// The events that explain a move from `before` to `now`. A machine seen
/// for the first time (or again after libvirt came back) has no `before`
/// and gets no events: the agent does not know what happened.
pub fn events(before: Option<Phase>, now: Phase) -> Vec<Event> {
    use LifecycleKind::{BootupFail, BootupStart, BootupSuccess};
    use LifecycleKind::{ShutdownFail, ShutdownStart, ShutdownSuccess};
    use Phase::{Failed, Off, Running, Starting, Stopping};

    let Some(before) = before else {
        return Vec::new();
    };
    match (before, now) {
        (Off | Failed, Starting) => vec![(BootupStart, None)],
        (Off | Failed, Running) => vec![(BootupStart, None), (BootupSuccess, None)],
        (Starting, Running) => vec![(BootupSuccess, None)],
        (Starting, Off | Failed) => vec![(BootupFail, Some(failed_start(now)))],
        (Running, Stopping) => vec![(ShutdownStart, None)],
        (Running, Off) => vec![(ShutdownStart, None), (ShutdownSuccess, None)],
        (Stopping, Off) => vec![(ShutdownSuccess, None)],
        (Stopping, Running) => vec![(ShutdownFail, Some(refused_stop()))],
        // A crash is not a shutdown anyone asked for: the state change
        // (inactive) tells the frontends, an event would misname it.
        (Running | Stopping, Failed) => Vec::new(),
        _ => Vec::new(),
    }
}

fn failed_start(now: Phase) -> String {
    match now {
        Phase::Failed => "The machine failed while starting.".to_owned(),
        _ => "The machine stopped before it finished starting.".to_owned(),
    }
}

fn refused_stop() -> String {
    "The machine is running again: the guest did not complete the shutdown.".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(before: Option<Phase>, now: Phase) -> Vec<LifecycleKind> {
        events(before, now)
            .into_iter()
            .map(|(kind, _)| kind)
            .collect()
    }

    #[test]
    fn a_machine_seen_for_the_first_time_gets_no_events() {
        assert!(kinds(None, Phase::Running).is_empty());
        assert!(kinds(None, Phase::Off).is_empty());
    }

    #[test]
    fn a_boot_seen_in_one_step_is_a_start_and_a_success() {
        use LifecycleKind::{BootupStart, BootupSuccess};
        assert_eq!(
            kinds(Some(Phase::Off), Phase::Running),
            [BootupStart, BootupSuccess]
        );
        assert_eq!(
            kinds(Some(Phase::Starting), Phase::Running),
            [BootupSuccess]
        );
    }

    #[test]
    fn a_shutdown_seen_in_one_step_is_a_start_and_a_success() {
        use LifecycleKind::{ShutdownStart, ShutdownSuccess};
        assert_eq!(
            kinds(Some(Phase::Running), Phase::Off),
            [ShutdownStart, ShutdownSuccess]
        );
        assert_eq!(kinds(Some(Phase::Stopping), Phase::Off), [ShutdownSuccess]);
    }

    #[test]
    fn failures_carry_an_error() {
        let failed = events(Some(Phase::Starting), Phase::Failed);
        assert_eq!(failed[0].0, LifecycleKind::BootupFail);
        assert!(failed[0].1.is_some());

        let refused = events(Some(Phase::Stopping), Phase::Running);
        assert_eq!(refused[0].0, LifecycleKind::ShutdownFail);
        assert!(refused[0].1.is_some());
    }

    #[test]
    fn staying_in_a_phase_is_silent() {
        for phase in [Phase::Off, Phase::Starting, Phase::Running, Phase::Stopping] {
            assert!(kinds(Some(phase), phase).is_empty());
        }
    }
}
