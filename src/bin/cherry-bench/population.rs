//! Who is in a scenario: the machines, the client accounts that see them,
//! one administrator with `VIEW_ALL_VMS`, the tokens they present, and the
//! ownership a control plane sets over gRPC before clients connect.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use uuid::Uuid;

use cherry_bridge::account::AccountType;
use cherry_bridge::grpc::client::ControlClient;
use cherry_bridge::proto;
use cherry_bridge::token::{self, TokenRequest};

use crate::process::JWT_SECRET;

/// How many machines each client account is assigned.
pub const MACHINES_PER_ACCOUNT: usize = 3;

/// Upserts in flight at once during setup.
const SETUP_CONCURRENCY: usize = 32;

pub struct Population {
    pub machines: Vec<Uuid>,
    /// Client accounts; account `c` is assigned the machines `sees(c)`.
    pub accounts: Vec<Uuid>,
    /// A token per account, minted once.
    pub tokens: Vec<String>,
    /// An administrator with `VIEW_ALL_VMS`, described by its token only.
    pub admin_token: String,
}

impl Population {
    pub fn new(machines: usize, accounts: usize) -> Self {
        let machines: Vec<Uuid> = (0..machines).map(|_| Uuid::new_v4()).collect();
        let accounts: Vec<Uuid> = (0..accounts).map(|_| Uuid::new_v4()).collect();
        let tokens = accounts
            .iter()
            .map(|account| mint(*account, AccountType::Client, None))
            .collect();
        let admin_token = mint(Uuid::new_v4(), AccountType::Administrative, Some(1));
        Population {
            machines,
            accounts,
            tokens,
            admin_token,
        }
    }

    /// The machine indices account `account` is assigned: spread over the
    /// fleet so that every machine has a few accounts too.
    pub fn sees(&self, account: usize) -> impl Iterator<Item = usize> + '_ {
        let count = self.machines.len();
        let step = (count / MACHINES_PER_ACCOUNT).max(1);
        (0..MACHINES_PER_ACCOUNT.min(count)).map(move |k| (account + k * step) % count)
    }

    /// The index of an account assigned machine `machine`, for `subscribed`
    /// sockets; every machine has one while there are at least as many
    /// accounts as machines.
    pub fn account_of(&self, machine: usize) -> usize {
        machine % self.accounts.len()
    }

    /// Sets every machine's assigned clients through the ControlService, as
    /// a control plane would.
    pub async fn upsert(&self, control: &ControlClient) -> Result<(), String> {
        let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); self.machines.len()];
        for account in 0..self.accounts.len() {
            for machine in self.sees(account) {
                assigned[machine].push(account);
            }
        }
        let requests =
            self.machines
                .iter()
                .zip(assigned)
                .enumerate()
                .map(|(index, (uuid, clients))| proto::UpsertMachineRequest {
                    machine: Some(proto::MachineDecision {
                        uuid: uuid.to_string(),
                        title: Some(format!("bench-{index:05}")),
                        tags: vec!["bench".to_owned()],
                        assigned_clients: clients
                            .into_iter()
                            .map(|account| proto::Account {
                                uuid: self.accounts[account].to_string(),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }),
                });
        let results: Vec<Result<(), String>> = stream::iter(requests)
            .map(|request| {
                let mut control = control.clone();
                async move {
                    control
                        .upsert_machine(request)
                        .await
                        .map(|_| ())
                        .map_err(|status| format!("UpsertMachine: {}", status.message()))
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

fn mint(account: Uuid, account_type: AccountType, permissions: Option<u64>) -> String {
    token::mint(
        JWT_SECRET.as_bytes(),
        &TokenRequest {
            account,
            account_type: Some(account_type),
            permissions,
            lifetime: Duration::from_secs(3600),
            token_type: "access".to_owned(),
        },
    )
    .expect("HS256 with a non-empty secret always signs")
}
