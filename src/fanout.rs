//! The connection index the fan-out routes through: every open WebSocket,
//! grouped the ways the registry needs to reach them (all `global`
//! connections, the `account` connections of one account, the `subscribed`
//! connections following one machine, every connection of one account).
//!
//! It lives inside the registry's lock, so that a connection's snapshot and
//! its registration here happen at one moment: every change after that
//! moment reaches it, none before it does.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::account::Principal;
use crate::outbox::Outbox;

pub type ConnId = u64;

/// What a connection shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The listed machines, each checked against the account's access.
    Subscribed(Vec<Uuid>),
    /// Every machine the account owns or is assigned to.
    Account,
    /// Every machine; needs `VIEW_ALL_VMS`.
    Global,
}

impl Scope {
    pub fn name(&self) -> &'static str {
        match self {
            Scope::Subscribed(_) => "subscribed",
            Scope::Account => "account",
            Scope::Global => "global",
        }
    }
}

pub struct Conn {
    /// Kept current when the directory changes the account.
    pub principal: Principal,
    pub scope: Scope,
    pub outbox: Arc<Outbox>,
}

type Group = HashMap<ConnId, Arc<Outbox>>;

#[derive(Default)]
pub struct Hub {
    next_id: ConnId,
    conns: HashMap<ConnId, Conn>,
    global: Group,
    /// `account` connections by account.
    account_scope: HashMap<Uuid, Group>,
    /// `subscribed` connections by followed machine.
    following: HashMap<Uuid, Group>,
    /// Every connection by account, for directory changes.
    by_account: HashMap<Uuid, Group>,
}

impl Hub {
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn insert(&mut self, conn: Conn) -> ConnId {
        let id = self.next_id;
        self.next_id += 1;

        let outbox = &conn.outbox;
        match &conn.scope {
            Scope::Global => {
                self.global.insert(id, outbox.clone());
            }
            Scope::Account => {
                self.account_scope
                    .entry(conn.principal.account)
                    .or_default()
                    .insert(id, outbox.clone());
            }
            Scope::Subscribed(machines) => {
                for machine in machines {
                    self.following
                        .entry(*machine)
                        .or_default()
                        .insert(id, outbox.clone());
                }
            }
        }
        self.by_account
            .entry(conn.principal.account)
            .or_default()
            .insert(id, outbox.clone());
        self.conns.insert(id, conn);
        id
    }

    pub fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        match &conn.scope {
            Scope::Global => {
                self.global.remove(&id);
            }
            Scope::Account => remove_from(&mut self.account_scope, &conn.principal.account, id),
            Scope::Subscribed(machines) => {
                for machine in machines {
                    remove_from(&mut self.following, machine, id);
                }
            }
        }
        remove_from(&mut self.by_account, &conn.principal.account, id);
        Some(conn)
    }

    pub fn global(&self) -> impl Iterator<Item = &Arc<Outbox>> {
        self.global.values()
    }

    pub fn has_global(&self) -> bool {
        !self.global.is_empty()
    }

    /// The `account` connections of one account.
    pub fn account_scope(&self, account: &Uuid) -> impl Iterator<Item = &Arc<Outbox>> {
        self.account_scope
            .get(account)
            .into_iter()
            .flat_map(Group::values)
    }

    /// Every account with `account` connections, with those connections.
    pub fn account_groups(
        &self,
    ) -> impl Iterator<Item = (&Uuid, impl Iterator<Item = &Arc<Outbox>>)> {
        self.account_scope
            .iter()
            .map(|(account, group)| (account, group.values()))
    }

    /// The `subscribed` connections following a machine.
    pub fn following(&self, machine: &Uuid) -> impl Iterator<Item = (&ConnId, &Arc<Outbox>)> {
        self.following
            .get(machine)
            .into_iter()
            .flat_map(Group::iter)
    }

    /// Every `subscribed` connection with the machines it follows.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&[Uuid], &Arc<Outbox>)> {
        self.conns.values().filter_map(|conn| match &conn.scope {
            Scope::Subscribed(machines) => Some((machines.as_slice(), &conn.outbox)),
            _ => None,
        })
    }

    /// The ids of every connection of one account.
    pub fn of_account(&self, account: &Uuid) -> Vec<ConnId> {
        self.by_account
            .get(account)
            .map(|group| group.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(&id)
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Conn> {
        self.conns.values()
    }
}

fn remove_from(groups: &mut HashMap<Uuid, Group>, key: &Uuid, id: ConnId) {
    if let Some(group) = groups.get_mut(key) {
        group.remove(&id);
        if group.is_empty() {
            groups.remove(key);
        }
    }
}
