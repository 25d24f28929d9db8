//! The registry: the latest picture of every machine, the account
//! directory, and the connections watching them.
//!
//! Everything sits behind one short-held lock and every method is
//! synchronous, so no lock is ever held across an await. A change is applied
//! and routed to the connections it concerns in the same critical section;
//! a new connection takes its snapshot and joins the fan-out in one critical
//! section too. Together these make "snapshot, then every later event,
//! exactly once, in order" hold by construction.
//!
//! Changed machine properties and directory entries are also queued to the
//! store's journal inside the same critical section, so the store sees them
//! in the order the registry applied them. Queuing never waits for a disk;
//! callers that acknowledge a change wait for the journal's barrier after
//! the lock is gone.
//!
//! JSON is prepared outside the hot path where possible: each machine keeps
//! its properties, state, disks and connections already serialized, so a
//! tick only concatenates fragments into one body per scope.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::time::{Duration, Instant};
use uuid::Uuid;

use crate::account::{Account, AccountType, Audience, Principal};
use crate::close::Close;
use crate::envelope::{self, Frame, MessageType};
use crate::fanout::{Conn, ConnId, Hub, Scope};
use crate::machine::{
    AgentFacts, DynamicDisk, MachineConnections, MachineDisks, MachineState, PlatformFacts,
    Properties,
};
use crate::outbox::{Outbox, Periodic};
use crate::store::{Contents, Journal};
use crate::token::Verified;

/// Identifies one agent stream, so its machines go stale when it ends.
pub type StreamId = u64;

/// What an upsert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

/// A lifecycle event an agent or operator reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    BootupStart,
    BootupSuccess,
    BootupFail,
    ShutdownStart,
    ShutdownSuccess,
    ShutdownFail,
}

impl Lifecycle {
    pub fn message_type(self) -> MessageType {
        match self {
            Lifecycle::BootupStart => MessageType::BootupStart,
            Lifecycle::BootupSuccess => MessageType::BootupSuccess,
            Lifecycle::BootupFail => MessageType::BootupFail,
            Lifecycle::ShutdownStart => MessageType::ShutdownStart,
            Lifecycle::ShutdownSuccess => MessageType::ShutdownSuccess,
            Lifecycle::ShutdownFail => MessageType::ShutdownFail,
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Lifecycle::BootupFail | Lifecycle::ShutdownFail)
    }
}

/// The registry has no machine with this UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownMachine;

/// Everything the registry holds about one machine, for operators.
#[derive(Clone, Debug)]
pub struct MachineView {
    pub properties: Properties,
    /// `None` when the state is stale or was never reported.
    pub state: Option<MachineState>,
    pub disks: Option<Vec<DynamicDisk>>,
    pub active_connections: Option<Vec<String>>,
}

/// A connection admitted to the fan-out.
pub struct Admission {
    pub id: ConnId,
    pub outbox: Arc<Outbox>,
    pub principal: Principal,
}

/// Limits the registry enforces on connections.
#[derive(Clone, Copy, Debug)]
pub struct RegistryLimits {
    /// State older than this is left out of DATA_DYNAMIC.
    pub stale_after: Duration,
    /// Unsent events a connection may hold before it is closed with 1013.
    pub max_backlog: usize,
    /// Open WebSockets in total; one more is closed with 1013.
    pub max_connections: usize,
    /// Open WebSockets per account; one more is closed with 1013.
    pub max_connections_per_account: usize,
}

pub struct Registry {
    inner: Mutex<Inner>,
    limits: RegistryLimits,
    /// Receives every changed property and directory entry, queued under
    /// the lock so the store's order is the registry's.
    journal: Journal,
}

#[derive(Default)]
struct Inner {
    machines: HashMap<Uuid, Machine>,
    /// The account directory a control plane keeps.
    accounts: HashMap<Uuid, Account>,
    /// For each account, the machines it owns or is assigned to.
    scopes: HashMap<Uuid, HashSet<Uuid>>,
    /// Open agent streams and the agent id each announced.
    streams: HashMap<StreamId, String>,
    next_stream: StreamId,
    hub: Hub,
}

struct Machine {
    properties: Properties,
    /// Derived from `properties`; kept to route changes cheaply.
    audience: Audience,
    /// The `MachineProperties` object, serialized.
    properties_json: Bytes,
    state: Option<Live>,
    disks: Reported<Option<Vec<DynamicDisk>>>,
    connections: Reported<Option<Vec<String>>>,
}

/// The last state an agent reported, and which stream reported it when.
struct Live {
    value: MachineState,
    json: Bytes,
    at: Instant,
    stream: StreamId,
}

/// A value with its JSON object, serialized once when it is reported.
struct Reported<T> {
    value: T,
    json: Bytes,
}

impl Machine {
    fn new(properties: Properties) -> Self {
        let uuid = properties.uuid;
        Machine {
            audience: properties.audience(),
            properties_json: properties.to_json().into(),
            properties,
            state: None,
            disks: Reported::unknown_disks(uuid),
            connections: Reported::unknown_connections(uuid),
        }
    }

    /// Drops live state, disks and connections, as if never reported.
    fn forget_live_data(&mut self) {
        let uuid = self.properties.uuid;
        self.state = None;
        self.disks = Reported::unknown_disks(uuid);
        self.connections = Reported::unknown_connections(uuid);
    }

    /// The serialized object this machine contributes to a periodic body, if
    /// any: state only while fresh, disks and connections always.
    fn fragment(&self, kind: Periodic, fresh_since: Option<Instant>) -> Option<&[u8]> {
        match kind {
            Periodic::State => self
                .state
                .as_ref()
                .filter(|live| fresh_since.is_none_or(|since| live.at >= since))
                .map(|live| &live.json[..]),
            Periodic::Disks => Some(&self.disks.json),
            Periodic::Connections => Some(&self.connections.json),
        }
    }
}

impl Reported<Option<Vec<DynamicDisk>>> {
    fn unknown_disks(uuid: Uuid) -> Self {
        Reported {
            value: None,
            json: to_json(&MachineDisks { uuid, disks: None }),
        }
    }
}

impl Reported<Option<Vec<String>>> {
    fn unknown_connections(uuid: Uuid) -> Self {
        Reported {
            value: None,
            json: to_json(&MachineConnections {
                uuid,
                active_connections: None,
            }),
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Bytes {
    // Sized for a typical state object, so that serializing one field at a
    // time does not grow the buffer over and over.
    let mut out = Vec::with_capacity(256);
    serde_json::to_writer(&mut out, value).expect("payloads always serialize");
    out.into()
}

impl Registry {
    /// An empty registry that keeps nothing beyond memory.
    pub fn new(limits: RegistryLimits) -> Self {
        Registry::restore(limits, Contents::default(), Journal::ephemeral())
    }

    /// A registry holding what a store held, writing later changes to
    /// `journal`. Every machine starts without live state, so it is left
    /// out of DATA_DYNAMIC until its agent reports again.
    pub fn restore(limits: RegistryLimits, contents: Contents, journal: Journal) -> Self {
        let mut inner = Inner::default();
        for properties in contents.machines {
            let uuid = properties.uuid;
            inner.machines.insert(uuid, Machine::new(properties));
            inner.reindex(uuid, &Audience::new());
        }
        for account in contents.accounts {
            inner.accounts.insert(account.uuid, account);
        }
        Registry {
            inner: Mutex::new(inner),
            limits,
            journal,
        }
    }

    /// Where changes go to be kept; its barrier tells when they are.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn limits(&self) -> RegistryLimits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation leaves the maps consistent before it can panic, so
        // a poisoned lock still guards usable data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ----- agent streams ---------------------------------------------------

    pub fn open_stream(&self, agent_id: String) -> StreamId {
        let mut inner = self.lock();
        let id = inner.next_stream;
        inner.next_stream += 1;
        inner.streams.insert(id, agent_id);
        id
    }

    /// Ends a stream: the state it reported stops being fresh at once.
    pub fn close_stream(&self, stream: StreamId) {
        let mut inner = self.lock();
        inner.streams.remove(&stream);
        for machine in inner.machines.values_mut() {
            if machine
                .state
                .as_ref()
                .is_some_and(|live| live.stream == stream)
            {
                machine.state = None;
            }
        }
    }

    pub fn open_streams(&self) -> usize {
        self.lock().streams.len()
    }

    // ----- machine properties ----------------------------------------------

    /// Records what an agent knows about a machine, creating it if needed.
    pub fn upsert_agent_facts(&self, uuid: Uuid, facts: AgentFacts) -> Change {
        self.upsert_properties(uuid, |properties| properties.agent = Some(facts))
    }

    /// Records what the platform decides about a machine, creating it if
    /// needed.
    pub fn upsert_platform_facts(&self, uuid: Uuid, facts: PlatformFacts) -> Change {
        self.upsert_properties(uuid, |properties| properties.platform = Some(facts))
    }

    fn upsert_properties(&self, uuid: Uuid, update: impl FnOnce(&mut Properties)) -> Change {
        let mut inner = self.lock();
        let Some(machine) = inner.machines.get(&uuid) else {
            let mut properties = Properties::new(uuid);
            update(&mut properties);
            self.journal.put_machine(&properties);
            inner.machines.insert(uuid, Machine::new(properties));
            inner.reindex(uuid, &Audience::new());
            inner.route_change(uuid, None);
            return Change::Created;
        };

        let mut properties = machine.properties.clone();
        update(&mut properties);
        if machine.properties == properties {
            return Change::Unchanged;
        }
        self.journal.put_machine(&properties);
        inner.replace_properties(uuid, properties);
        Change::Updated
    }

    /// Forgets a machine and tells every scope that showed it.
    pub fn remove_machine(&self, uuid: Uuid) -> Result<(), UnknownMachine> {
        let mut inner = self.lock();
        inner.machines.get(&uuid).ok_or(UnknownMachine)?;
        self.journal.remove_machine(uuid);
        inner.remove(uuid);
        Ok(())
    }

    /// An agent no longer hosts the machine: what that agent reported goes
    /// (name, disks, live data), what the platform decided stays. A machine
    /// the platform does not describe is removed. Unknown machines are
    /// ignored, so an agent may repeat itself.
    pub fn withdraw_agent_facts(&self, uuid: Uuid) {
        let mut inner = self.lock();
        let Some(machine) = inner.machines.get_mut(&uuid) else {
            return;
        };
        if machine.properties.platform.is_none() {
            self.journal.remove_machine(uuid);
            inner.remove(uuid);
            return;
        }
        machine.forget_live_data();
        if machine.properties.agent.is_none() {
            return;
        }
        let mut properties = machine.properties.clone();
        properties.agent = None;
        self.journal.put_machine(&properties);
        inner.replace_properties(uuid, properties);
    }

    // ----- live data ---------------------------------------------------------

    pub fn report_state(
        &self,
        stream: StreamId,
        state: MachineState,
    ) -> Result<(), UnknownMachine> {
        // Agents report every machine every second from several streams at
        // once: do everything but the swap itself outside the lock.
        let live = Live {
            json: state.to_json().into(),
            value: state,
            at: Instant::now(),
            stream,
        };
        let mut inner = self.lock();
        let machine = inner
            .machines
            .get_mut(&live.value.uuid)
            .ok_or(UnknownMachine)?;
        let previous = machine.state.replace(live);
        drop(inner);
        drop(previous);
        Ok(())
    }

    pub fn report_disks(&self, disks: MachineDisks) -> Result<(), UnknownMachine> {
        let json = to_json(&disks);
        let mut inner = self.lock();
        let machine = inner.machines.get_mut(&disks.uuid).ok_or(UnknownMachine)?;
        machine.disks = Reported {
            value: disks.disks,
            json,
        };
        Ok(())
    }

    pub fn report_connections(
        &self,
        connections: MachineConnections,
    ) -> Result<(), UnknownMachine> {
        let json = to_json(&connections);
        let mut inner = self.lock();
        let machine = inner
            .machines
            .get_mut(&connections.uuid)
            .ok_or(UnknownMachine)?;
        machine.connections = Reported {
            value: connections.active_connections,
            json,
        };
        Ok(())
    }

    /// Sends a lifecycle event to every scope that shows the machine.
    pub fn publish(
        &self,
        uuid: Uuid,
        event: Lifecycle,
        error: Option<&str>,
    ) -> Result<(), UnknownMachine> {
        let body = if event.is_failure() {
            envelope::failure_body(&uuid, error)
        } else {
            envelope::uuid_body(&uuid)
        };
        let frame = envelope::frame(event.message_type(), &body);

        let inner = self.lock();
        let machine = inner.machines.get(&uuid).ok_or(UnknownMachine)?;
        for outbox in inner.hub.global() {
            outbox.push_event(frame.clone());
        }
        for account in &machine.audience {
            for outbox in inner.hub.account_scope(account) {
                outbox.push_event(frame.clone());
            }
        }
        for (_, outbox) in inner.hub.following(&uuid) {
            outbox.push_event(frame.clone());
        }
        Ok(())
    }

    // ----- reading -----------------------------------------------------------

    pub fn machine(&self, uuid: Uuid) -> Option<MachineView> {
        let inner = self.lock();
        let since = Instant::now().checked_sub(self.limits.stale_after);
        inner
            .machines
            .get(&uuid)
            .map(|machine| view(machine, since))
    }

    pub fn machines(&self) -> Vec<MachineView> {
        let inner = self.lock();
        let since = Instant::now().checked_sub(self.limits.stale_after);
        let mut machines: Vec<MachineView> = inner
            .machines
            .values()
            .map(|machine| view(machine, since))
            .collect();
        machines.sort_by_key(|machine| machine.properties.uuid);
        machines
    }

    /// Machines known, and machines whose state is fresh.
    pub fn machine_counts(&self) -> (usize, usize) {
        let inner = self.lock();
        let since = Instant::now().checked_sub(self.limits.stale_after);
        let fresh = inner
            .machines
            .values()
            .filter(|machine| machine.fragment(Periodic::State, since).is_some())
            .count();
        (inner.machines.len(), fresh)
    }

    // ----- the account directory ---------------------------------------------

    /// Creates or replaces a directory entry and applies it to the account's
    /// open connections at once.
    pub fn upsert_account(&self, account: Account) -> Change {
        let mut inner = self.lock();
        let change = match inner.accounts.get(&account.uuid) {
            Some(existing) if *existing == account => return Change::Unchanged,
            Some(_) => Change::Updated,
            None => Change::Created,
        };
        let uuid = account.uuid;
        let principal = Principal {
            account: uuid,
            account_type: account.account_type,
            permissions: account.permissions,
        };
        let disabled = account.disabled;
        self.journal.put_account(&account);
        inner.accounts.insert(uuid, account);

        for id in inner.hub.of_account(&uuid) {
            if disabled {
                inner.close_conn(id, Close::AccountDisabled);
                continue;
            }
            if let Some(refusal) = inner.recheck(id, principal) {
                inner.close_conn(id, refusal);
            }
        }
        change
    }

    /// Removes a directory entry; the account's connections close with 4403.
    pub fn remove_account(&self, uuid: Uuid) -> bool {
        let mut inner = self.lock();
        if inner.accounts.remove(&uuid).is_none() {
            return false;
        }
        self.journal.remove_account(uuid);
        for id in inner.hub.of_account(&uuid) {
            inner.close_conn(id, Close::AccountRemoved);
        }
        true
    }

    pub fn accounts(&self) -> Vec<Account> {
        let inner = self.lock();
        let mut accounts: Vec<Account> = inner.accounts.values().cloned().collect();
        accounts.sort_by_key(|account| account.uuid);
        accounts
    }

    // ----- connections -------------------------------------------------------

    /// Admits a connection: decides its account, checks its access, queues
    /// its four connect messages and joins it to the fan-out, all at one
    /// moment of the registry.
    pub fn admit(&self, token: &Verified, scope: Scope) -> Result<Admission, Close> {
        let mut inner = self.lock();

        let principal = match inner.accounts.get(&token.account) {
            Some(account) if account.disabled => return Err(Close::AccountDisabled),
            Some(account) => Principal {
                account: account.uuid,
                account_type: account.account_type,
                permissions: account.permissions,
            },
            None => match token.claimed {
                Some((account_type, permissions)) => Principal {
                    account: token.account,
                    account_type,
                    permissions: match account_type {
                        AccountType::Administrative => permissions,
                        AccountType::Client => 0,
                    },
                },
                None => return Err(Close::UnknownAccount),
            },
        };
        inner.check_access(&principal, &scope)?;
        if inner.hub.len() >= self.limits.max_connections {
            return Err(Close::ConnectionLimit);
        }
        if inner.hub.of_account(&principal.account).len() >= self.limits.max_connections_per_account
        {
            return Err(Close::ConnectionLimit);
        }

        let since = Instant::now().checked_sub(self.limits.stale_after);
        let machines = inner.scope_machines(&principal, &scope);
        let properties = envelope::keyed_body(
            machines
                .iter()
                .filter_map(|uuid| inner.machines.get_key_value(uuid))
                .map(|(uuid, machine)| (uuid, &machine.properties_json[..])),
        );
        let periodic = Periodic::ALL.map(|kind| {
            let body = inner.periodic_body(&machines, kind, since);
            envelope::frame(kind.message_type(), &body)
        });
        let outbox = Arc::new(Outbox::new(
            self.limits.max_backlog,
            envelope::frame(MessageType::DataStatic, &properties),
            periodic,
        ));

        let id = inner.hub.insert(Conn {
            principal,
            scope,
            outbox: outbox.clone(),
        });
        Ok(Admission {
            id,
            outbox,
            principal,
        })
    }

    pub fn release(&self, id: ConnId) {
        self.lock().hub.remove(id);
    }

    pub fn connection_count(&self) -> usize {
        self.lock().hub.len()
    }

    /// Asks every connection to close, for shutdown.
    pub fn close_all(&self, reason: Close) {
        let inner = self.lock();
        for conn in inner.hub.all() {
            conn.outbox.close(reason);
        }
    }

    // ----- periodic messages -------------------------------------------------

    /// Builds this tick's body once per scope (once for `global`, once per
    /// account, once per set of followed machines) and hands each to the
    /// connections that share it.
    // LIMITATION: sockets are handed their frame, and so written, in a
    // fixed order: `global`, then `account`, then `subscribed`. The last
    // ones wait for the whole fan-out (about a tenth of a second at 11,000
    // sockets on two cores), so their DATA_DYNAMIC is the first to arrive
    // more than 1.1 s after the previous one when the machine is busy.
    pub fn tick(&self, kind: Periodic) {
        let since = match kind {
            Periodic::State => Instant::now().checked_sub(self.limits.stale_after),
            Periodic::Disks | Periodic::Connections => None,
        };
        let message_type = kind.message_type();
        let inner = self.lock();

        if inner.hub.has_global() {
            let body = envelope::keyed_body(
                inner
                    .machines
                    .iter()
                    .filter_map(|(uuid, machine)| Some((uuid, machine.fragment(kind, since)?))),
            );
            let frame = envelope::frame(message_type, &body);
            for outbox in inner.hub.global() {
                outbox.push_periodic(kind, frame.clone());
            }
        }

        let empty = HashSet::new();
        for (account, outboxes) in inner.hub.account_groups() {
            let machines = inner.scopes.get(account).unwrap_or(&empty);
            let body = inner.periodic_body(machines, kind, since);
            let frame = envelope::frame(message_type, &body);
            for outbox in outboxes {
                outbox.push_periodic(kind, frame.clone());
            }
        }

        let mut shared: HashMap<&[Uuid], Frame> = HashMap::new();
        for (machines, outbox) in inner.hub.subscriptions() {
            let frame = shared.entry(machines).or_insert_with(|| {
                let body = inner.periodic_body(machines, kind, since);
                envelope::frame(message_type, &body)
            });
            outbox.push_periodic(kind, frame.clone());
        }
    }
}

fn view(machine: &Machine, since: Option<Instant>) -> MachineView {
    MachineView {
        properties: machine.properties.clone(),
        state: machine
            .state
            .as_ref()
            .filter(|live| since.is_none_or(|since| live.at >= since))
            .map(|live| live.value.clone()),
        disks: machine.disks.value.clone(),
        active_connections: machine.connections.value.clone(),
    }
}

impl Inner {
    /// Puts new properties in place and tells the scopes that see a
    /// difference. Properties that render the same JSON (an agent's new
    /// name under a platform's title, say) are kept but not announced.
    fn replace_properties(&mut self, uuid: Uuid, properties: Properties) {
        let machine = self.machines.get_mut(&uuid).expect("callers looked it up");
        let json = Bytes::from(properties.to_json());
        let old_audience = std::mem::replace(&mut machine.audience, properties.audience());
        machine.properties = properties;
        if json == machine.properties_json {
            return;
        }
        machine.properties_json = json;
        self.reindex(uuid, &old_audience);
        self.route_change(uuid, Some(&old_audience));
    }

    /// Forgets a machine and tells every scope that showed it.
    fn remove(&mut self, uuid: Uuid) {
        let Some(machine) = self.machines.remove(&uuid) else {
            return;
        };
        self.reindex(uuid, &machine.audience);
        self.route_change(uuid, Some(&machine.audience));
    }

    /// Moves `uuid` between the per-account scope index entries after its
    /// audience changed from `old` to whatever it is now (nothing, if the
    /// machine is gone).
    fn reindex(&mut self, uuid: Uuid, old: &Audience) {
        let new = self
            .machines
            .get(&uuid)
            .map(|machine| machine.audience.clone())
            .unwrap_or_default();
        for account in old.difference(&new) {
            if let Some(machines) = self.scopes.get_mut(account) {
                machines.remove(&uuid);
                if machines.is_empty() {
                    self.scopes.remove(account);
                }
            }
        }
        for account in new.difference(old) {
            self.scopes.entry(*account).or_default().insert(uuid);
        }
    }

    /// Tells every connection what a change to machine `uuid` means for it.
    /// `before` is the audience the machine had, or `None` if it did not
    /// exist; what it has now is read from the registry.
    fn route_change(&self, uuid: Uuid, before: Option<&Audience>) {
        let after = self.machines.get(&uuid);
        let mut frames = Frames::new(uuid, after.map(|machine| &machine.properties_json[..]));

        // `global` shows every machine.
        if self.hub.has_global() {
            let frame = match (before, after) {
                (None, Some(_)) => frames.create(),
                (Some(_), Some(_)) => frames.data_static(),
                (Some(_), None) => frames.delete(),
                (None, None) => return,
            };
            for outbox in self.hub.global() {
                outbox.push_event(frame.clone());
            }
        }

        // `account` shows what the account owns or is assigned to.
        let empty = Audience::new();
        let old = before.unwrap_or(&empty);
        let new = after.map(|machine| &machine.audience).unwrap_or(&empty);
        for account in old.union(new) {
            let frame = match (old.contains(account), new.contains(account)) {
                (false, true) => frames.create(),
                (true, true) => frames.data_static(),
                (true, false) => frames.delete(),
                (false, false) => continue,
            };
            for outbox in self.hub.account_scope(account) {
                outbox.push_event(frame.clone());
            }
        }

        // `subscribed` follows the machine by UUID: it sees it go and come
        // back, and loses the socket if its account may no longer see it.
        let mut forbidden = Vec::new();
        for (id, outbox) in self.hub.following(&uuid) {
            match after {
                None => outbox.push_event(frames.delete()),
                Some(machine) => {
                    let principal = self.hub.get(*id).map(|conn| conn.principal);
                    if principal.is_some_and(|p| p.sees(&machine.audience)) {
                        outbox.push_event(frames.data_static());
                    } else {
                        forbidden.push(*id);
                    }
                }
            }
        }
        for id in forbidden {
            self.close_conn(id, Close::MachineForbidden);
        }
    }

    /// Whether `principal` may open `scope`.
    fn check_access(&self, principal: &Principal, scope: &Scope) -> Result<(), Close> {
        match scope {
            Scope::Account => Ok(()),
            Scope::Global if principal.may_view_all() => Ok(()),
            Scope::Global => Err(Close::ViewAllRequired),
            Scope::Subscribed(machines) => {
                for uuid in machines {
                    let machine = self.machines.get(uuid).ok_or(Close::MachineForbidden)?;
                    if !principal.sees(&machine.audience) {
                        return Err(Close::MachineForbidden);
                    }
                }
                Ok(())
            }
        }
    }

    /// Re-checks an open connection after its account changed in the
    /// directory; returns why it must close, if it must. Machines a
    /// `subscribed` connection follows that no longer exist do not count:
    /// their deletion was already sent.
    fn recheck(&mut self, id: ConnId, principal: Principal) -> Option<Close> {
        let conn = self.hub.get_mut(id)?;
        conn.principal = principal;
        match &conn.scope {
            Scope::Account => None,
            Scope::Global => (!principal.may_view_all()).then_some(Close::ViewAllRequired),
            Scope::Subscribed(machines) => machines
                .iter()
                .filter_map(|uuid| self.machines.get(uuid))
                .any(|machine| !principal.sees(&machine.audience))
                .then_some(Close::MachineForbidden),
        }
    }

    fn close_conn(&self, id: ConnId, reason: Close) {
        if let Some(conn) = self.hub.get(id) {
            conn.outbox.close(reason);
        }
    }

    /// The machines a scope shows right now.
    fn scope_machines(&self, principal: &Principal, scope: &Scope) -> Vec<Uuid> {
        match scope {
            Scope::Global => self.machines.keys().copied().collect(),
            Scope::Account => self
                .scopes
                .get(&principal.account)
                .map(|machines| machines.iter().copied().collect())
                .unwrap_or_default(),
            Scope::Subscribed(machines) => machines.clone(),
        }
    }

    /// A periodic body for the listed machines; those that do not exist are
    /// skipped.
    fn periodic_body<'a>(
        &self,
        machines: impl IntoIterator<Item = &'a Uuid>,
        kind: Periodic,
        since: Option<Instant>,
    ) -> Vec<u8> {
        envelope::keyed_body(machines.into_iter().filter_map(|uuid| {
            let (uuid, machine) = self.machines.get_key_value(uuid)?;
            Some((uuid, machine.fragment(kind, since)?))
        }))
    }
}

/// The frames one machine change may need, each built at most once and
/// shared by every connection that gets it.
struct Frames<'a> {
    uuid: Uuid,
    properties: Option<&'a [u8]>,
    create: Option<Frame>,
    data_static: Option<Frame>,
    delete: Option<Frame>,
}

impl<'a> Frames<'a> {
    fn new(uuid: Uuid, properties: Option<&'a [u8]>) -> Self {
        Frames {
            uuid,
            properties,
            create: None,
            data_static: None,
            delete: None,
        }
    }

    fn create(&mut self) -> Frame {
        let properties = self.properties.unwrap_or(b"null");
        self.create
            .get_or_insert_with(|| envelope::frame(MessageType::Create, properties))
            .clone()
    }

    fn data_static(&mut self) -> Frame {
        let uuid = self.uuid;
        let properties = self.properties.unwrap_or(b"null");
        self.data_static
            .get_or_insert_with(|| {
                let body = envelope::keyed_body([(&uuid, properties)]);
                envelope::frame(MessageType::DataStatic, &body)
            })
            .clone()
    }

    fn delete(&mut self) -> Frame {
        let uuid = self.uuid;
        self.delete
            .get_or_insert_with(|| {
                envelope::frame(MessageType::Delete, &envelope::uuid_body(&uuid))
            })
            .clone()
    }
}
