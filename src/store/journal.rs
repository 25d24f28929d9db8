//! The journal: how a change gets from the registry to disk without the
//! registry ever waiting for a disk.
//!
//! The registry queues each changed record while it holds its lock, so the
//! queue's order is the order the registry applied the changes in. Queuing
//! is a push onto an unbounded channel: no I/O, no await. One writer thread
//! drains the queue: it takes every write pending at that moment into one
//! transaction, commits it (the fsync happens here, on no one's lock), and
//! then answers every barrier that was queued with them. A caller that must
//! not acknowledge before its change is durable asks for a barrier after
//! the change and waits for it; while one commit runs, the next batch
//! gathers behind it, so a burst of upserts costs a few commits, not one
//! each.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};
use uuid::Uuid;

use crate::account::Account;
use crate::machine::Properties;
use crate::store::record::{AccountRecord, MachineRecord};
use crate::store::{ACCOUNTS, MACHINES, StoreError};

/// Most writes one transaction takes; the rest wait for the next one. Keeps
/// a single commit, and so the first acknowledgement of a huge burst, short.
const MAX_BATCH: usize = 4096;

/// One change to the store.
enum Write {
    PutMachine(Box<MachineRecord>),
    RemoveMachine(Uuid),
    PutAccount(Box<AccountRecord>),
    RemoveAccount(Uuid),
}

enum Op {
    Write(Write),
    /// Answered once everything queued before it is durable.
    Barrier(oneshot::Sender<Result<(), StoreError>>),
    /// Commit what is queued and stop.
    Close,
}

/// Where the registry sends changes. Cheap to clone. An ephemeral journal
/// drops every change and has every barrier pass at once.
#[derive(Clone)]
pub struct Journal {
    target: Option<Target>,
}

#[derive(Clone)]
struct Target {
    /// Into the writer thread, in the registry's order.
    queue: mpsc::UnboundedSender<Op>,
    /// For errors: which file failed.
    path: Arc<Path>,
    /// Transactions committed so far; with the writes queued, tells how
    /// well bursts are batched.
    commits: Arc<AtomicU64>,
}

impl Journal {
    /// A journal that keeps nothing, for `--ephemeral`.
    pub fn ephemeral() -> Self {
        Journal { target: None }
    }

    pub fn put_machine(&self, properties: &Properties) {
        self.send(|| Op::Write(Write::PutMachine(Box::new(MachineRecord::from(properties)))));
    }

    pub fn remove_machine(&self, uuid: Uuid) {
        self.send(|| Op::Write(Write::RemoveMachine(uuid)));
    }

    pub fn put_account(&self, account: &Account) {
        self.send(|| Op::Write(Write::PutAccount(Box::new(AccountRecord::from(account)))));
    }

    pub fn remove_account(&self, uuid: Uuid) {
        self.send(|| Op::Write(Write::RemoveAccount(uuid)));
    }

    /// Resolves once every change queued before this call is on disk.
    pub fn barrier(&self) -> Durable {
        let Some(target) = &self.target else {
            return Durable(Pending::Now);
        };
        let (done, wait) = oneshot::channel();
        if target.queue.send(Op::Barrier(done)).is_err() {
            return Durable(Pending::Failed(closed(target)));
        }
        Durable(Pending::Waiting {
            wait,
            path: target.path.clone(),
        })
    }

    /// Transactions the writer has committed; 0 when ephemeral.
    pub fn commits(&self) -> u64 {
        self.target
            .as_ref()
            .map_or(0, |target| target.commits.load(Ordering::Relaxed))
    }

    pub(super) fn close(&self) {
        self.send(|| Op::Close);
    }

    /// Queues an operation. If the writer is gone the operation is lost,
    /// and the next barrier says so.
    fn send(&self, op: impl FnOnce() -> Op) {
        if let Some(target) = &self.target {
            let _ = target.queue.send(op());
        }
    }
}

fn closed(target: &Target) -> StoreError {
    StoreError::Closed {
        path: target.path.to_path_buf(),
    }
}

/// A promise that earlier changes are durable; see [`Journal::barrier`].
pub struct Durable(Pending);

enum Pending {
    Now,
    Waiting {
        wait: oneshot::Receiver<Result<(), StoreError>>,
        path: Arc<Path>,
    },
    Failed(StoreError),
}

impl Durable {
    /// Nothing to wait for.
    pub fn now() -> Self {
        Durable(Pending::Now)
    }

    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            Pending::Now => Ok(()),
            Pending::Failed(error) => Err(error),
            Pending::Waiting { wait, path } => wait.await.unwrap_or_else(|_| {
                Err(StoreError::Closed {
                    path: path.to_path_buf(),
                })
            }),
        }
    }
}

/// Starts the writer thread on an open database.
pub(super) fn start(
    database: Database,
    path: Arc<Path>,
) -> std::io::Result<(Journal, JoinHandle<()>)> {
    let (journal, pending) = journal(path);
    let target = journal.target.clone().expect("a journal with a writer");
    let writer = std::thread::Builder::new()
        .name("store-writer".to_owned())
        .spawn(move || run(database, &target, pending))?;
    Ok((journal, writer))
}

/// A journal and the queue its writer reads.
fn journal(path: Arc<Path>) -> (Journal, mpsc::UnboundedReceiver<Op>) {
    let (queue, pending) = mpsc::unbounded_channel();
    let target = Target {
        queue,
        path,
        commits: Arc::new(AtomicU64::new(0)),
    };
    let journal = Journal {
        target: Some(target),
    };
    (journal, pending)
}

/// The writer: one batch, one commit, then the barriers, until closed.
///
/// After a failed commit every later barrier fails with the same error:
/// a change may have reached the registry and the frontends but not the
/// disk, and acknowledging anything after it would hide that.
// LIMITATION: the registry applies a change before the store commits it,
// so after a failed commit the frontends may show changes that a restart
// forgets. The writer does not retry; the bridge keeps serving but answers
// every later change with an error until it is restarted.
fn run(database: Database, target: &Target, mut pending: mpsc::UnboundedReceiver<Op>) {
    let path = &target.path;
    let mut failure: Option<StoreError> = None;
    let mut batch = Vec::new();

    while let Some(first) = pending.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            let Ok(op) = pending.try_recv() else { break };
            batch.push(op);
        }

        let mut writes = Vec::new();
        let mut barriers = Vec::new();
        let mut closing = false;
        for op in batch.drain(..) {
            match op {
                Op::Write(write) => writes.push(write),
                Op::Barrier(done) => barriers.push(done),
                Op::Close => closing = true,
            }
        }

        if failure.is_none() && !writes.is_empty() {
            match commit(&database, &writes) {
                Ok(()) => {
                    target.commits.fetch_add(1, Ordering::Relaxed);
                    debug!(writes = writes.len(), "store batch committed");
                }
                Err(reason) => {
                    error!(path = %path.display(), %reason, "store commit failed");
                    failure = Some(StoreError::Write {
                        path: path.to_path_buf(),
                        reason: reason.to_string(),
                    });
                }
            }
        }

        let outcome = failure.clone().map_or(Ok(()), Err);
        for done in barriers {
            let _ = done.send(outcome.clone());
        }
        if closing {
            break;
        }
    }
}

fn commit(database: &Database, writes: &[Write]) -> Result<(), redb::Error> {
    let transaction = database.begin_write()?;
    {
        let mut machines = transaction.open_table(MACHINES)?;
        let mut accounts = transaction.open_table(ACCOUNTS)?;
        for write in writes {
            match write {
                Write::PutMachine(record) => {
                    machines.insert(record.uuid.as_u128(), encode(record).as_slice())?;
                }
                Write::RemoveMachine(uuid) => {
                    machines.remove(uuid.as_u128())?;
                }
                Write::PutAccount(record) => {
                    accounts.insert(record.uuid.as_u128(), encode(record).as_slice())?;
                }
                Write::RemoveAccount(uuid) => {
                    accounts.remove(uuid.as_u128())?;
                }
            }
        }
    }
    transaction.commit()?;
    Ok(())
}

fn encode<R: serde::Serialize>(record: &R) -> Vec<u8> {
    serde_json::to_vec(record).expect("records hold only strings, numbers and lists")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::AgentFacts;
    use crate::store::{Store, open_and_read};

    fn named(uuid: u128, name: &str) -> Properties {
        Properties {
            agent: Some(AgentFacts {
                name: Some(name.to_owned()),
                disks: Vec::new(),
            }),
            ..Properties::new(Uuid::from_u128(uuid))
        }
    }

    #[test]
    fn a_burst_queued_at_once_is_one_transaction_applied_in_order() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path: Arc<Path> = dir.path().join(crate::store::FILE_NAME).into();
        let (database, _) = open_and_read(&path).expect("a new store opens");

        // Everything is queued before the writer starts, as when a burst
        // arrives during a commit.
        let (journal, pending) = journal(path.clone());
        for uuid in 0..1000 {
            journal.put_machine(&named(uuid, "first"));
        }
        journal.put_machine(&named(7, "second"));
        journal.remove_machine(Uuid::from_u128(8));
        let durable = journal.barrier();
        journal.close();
        let target = journal.target.clone().expect("a journal with a writer");
        run(database, &target, pending);

        assert_eq!(journal.commits(), 1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime builds");
        runtime
            .block_on(durable.wait())
            .expect("the burst is durable");
        let (store, contents) = Store::open(dir.path()).expect("the store reopens");
        assert_eq!(contents.machines.len(), 999);
        let seventh = contents
            .machines
            .iter()
            .find(|properties| properties.uuid == Uuid::from_u128(7))
            .expect("machine 7 is kept");
        assert_eq!(seventh.title(), Some("second"));
        store.close();
    }
}
