//! `cherry-bridge demo`: the whole job on one machine. Starts a bridge,
//! describes accounts and machines through the control service, runs a
//! simulated hypervisor on the agent stream, and prints URLs with valid
//! tokens to watch it all.

mod hypervisor;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use uuid::Uuid;

use crate::account::{AccountType, VIEW_ALL_VMS};
use crate::bridge::Bridge;
use crate::config::Config;
use crate::grpc::client::{self, ControlClient};
use crate::grpc::proto;
use crate::token::{self, TokenRequest};

/// How many machines the simulated hypervisor runs.
const MACHINES: usize = 12;
/// How many of them the owner owns; the administrator owns the rest.
const OWNED_BY_OWNER: usize = 8;
/// Which machines the client is assigned to.
const ASSIGNED_TO_CLIENT: [usize; 4] = [0, 1, 2, 9];
/// How long the printed tokens stay valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The demo's three accounts.
struct Cast {
    administrator: Uuid,
    owner: Uuid,
    client: Uuid,
}

const CAST: Cast = Cast {
    administrator: Uuid::from_u128(0x0a0d_0000_0000_4000_8000_0000_0000_0001),
    owner: Uuid::from_u128(0x0a0d_0000_0000_4000_8000_0000_0000_0002),
    client: Uuid::from_u128(0x0c11_0000_0000_4000_8000_0000_0000_0003),
};

pub type DemoError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the demo until SIGINT or SIGTERM. `secret` must be the HS256 secret
/// of `config`, so the demo can mint tokens.
pub async fn run(config: Config, secret: &[u8]) -> Result<(), DemoError> {
    let agent_token = config.agent_token.clone();
    let disks_every = config.intervals.disks;
    let bridge = Bridge::start(config).await?;
    let (agent, mut control) = client::connect(reachable(bridge.grpc_addr()), &agent_token).await?;

    describe_accounts(&mut control).await?;
    let machines = hypervisor::machines(MACHINES);
    for (index, machine) in machines.iter().enumerate() {
        control
            .upsert_machine(proto::UpsertMachineRequest {
                machine: Some(decision(index, machine.uuid)),
            })
            .await?;
    }
    let first_owned = machines[0].uuid;

    let stop = bridge.shutdown_token();
    tokio::spawn(async move {
        if let Err(status) = hypervisor::run(agent, machines, disks_every, stop).await {
            tracing::error!(code = ?status.code(), message = status.message(), "simulated hypervisor stopped");
        }
    });

    print_banner(&bridge, secret, &agent_token, first_owned)?;
    bridge.run_until_signal().await;
    Ok(())
}

/// The address a local client uses to reach a listener bound to `addr`.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

fn person(
    uuid: Uuid,
    username: &str,
    name: &str,
    surname: &str,
    account_type: AccountType,
) -> proto::Account {
    let (account_type, permissions) = match account_type {
        AccountType::Administrative if uuid == CAST.administrator => {
            (proto::AccountType::Administrative, VIEW_ALL_VMS as i64)
        }
        AccountType::Administrative => (proto::AccountType::Administrative, 0),
        AccountType::Client => (proto::AccountType::Client, 0),
    };
    proto::Account {
        uuid: uuid.to_string(),
        username: Some(username.to_owned()),
        email: Some(format!("{username}@example.com")),
        name: Some(name.to_owned()),
        surname: Some(surname.to_owned()),
        creation_date: Some("2026-01-15".to_owned()),
        account_type: account_type as i32,
        permissions,
        ..Default::default()
    }
}

fn administrator() -> proto::Account {
    person(
        CAST.administrator,
        "ada",
        "Ada",
        "Admin",
        AccountType::Administrative,
    )
}

fn owner() -> proto::Account {
    person(
        CAST.owner,
        "owen",
        "Owen",
        "Owner",
        AccountType::Administrative,
    )
}

fn client() -> proto::Account {
    person(CAST.client, "clara", "Clara", "Client", AccountType::Client)
}

async fn describe_accounts(control: &mut ControlClient) -> Result<(), DemoError> {
    for account in [administrator(), owner(), client()] {
        control
            .upsert_account(proto::UpsertAccountRequest {
                account: Some(account),
            })
            .await?;
    }
    Ok(())
}

/// What the demo's control plane decides about machine `index`. Every
/// third machine keeps the hypervisor's name as its title.
fn decision(index: usize, uuid: Uuid) -> proto::MachineDecision {
    let owner = if index < OWNED_BY_OWNER {
        owner()
    } else {
        administrator()
    };
    let assigned_clients = if ASSIGNED_TO_CLIENT.contains(&index) {
        vec![client()]
    } else {
        Vec::new()
    };
    let role = ["web", "database", "build", "desktop"][index % 4];
    proto::MachineDecision {
        uuid: uuid.to_string(),
        title: (!index.is_multiple_of(3)).then(|| format!("{role} {:02}", index + 1)),
        tags: vec![role.to_owned(), "demo".to_owned()],
        description: Some(format!("A simulated {role} machine.")),
        owner: Some(owner),
        assigned_clients,
        connections: Some(proto::RemoteAccess {
            vnc: Some(format!("vnc://127.0.0.1:{}", 5900 + index)),
            ssh: (role != "desktop").then(|| format!("ssh://demo@127.0.0.1:{}", 2200 + index)),
            rdp: None,
        }),
    }
}

fn print_banner(
    bridge: &Bridge,
    secret: &[u8],
    agent_token: &str,
    subscribed: Uuid,
) -> Result<(), DemoError> {
    let mint = |account: Uuid| {
        token::mint(
            secret,
            &TokenRequest {
                account,
                account_type: None,
                permissions: None,
                lifetime: TOKEN_LIFETIME,
                token_type: "access".to_owned(),
            },
        )
    };
    let http = format!("http://{}", reachable(bridge.http_addr()));
    let ws = format!("ws://{}/ws/machines", reachable(bridge.http_addr()));
    let grpc = reachable(bridge.grpc_addr());
    let administrator = mint(CAST.administrator)?;
    let owner = mint(CAST.owner)?;
    let client = mint(CAST.client)?;

    println!(
        "\ncherry-bridge demo: {MACHINES} simulated machines boot, run, shut down and sometimes fail.\n\
         \n\
         Open these in any WebSocket client (tokens valid for 24 hours; quote them in a shell):\n\
         \n\
         administrator with VIEW_ALL_VMS, every machine:\n  {ws}/global?access_token={administrator}\n\
         \n\
         owner (administrator without VIEW_ALL_VMS), the {OWNED_BY_OWNER} machines it owns:\n  {ws}/account?access_token={owner}\n\
         \n\
         client, the {} machines assigned to it:\n  {ws}/account?access_token={client}\n\
         \n\
         one machine the owner owns:\n  {ws}/subscribed?access_token={owner}&machine_uuid={subscribed}\n\
         \n\
         the live page (what the administrator's frontend receives), and the metrics:\n  \
         {http}/?access_token={administrator}&scope=global\n  {http}/metrics\n\
         \n\
         gRPC, with reflection:\n  grpcurl -plaintext {grpc} list\n  \
         grpcurl -plaintext -H 'authorization: Bearer {agent_token}' {grpc} cherry.bridge.v1.ControlService/ListMachines\n\
         \n\
         Press Ctrl-C to stop.\n",
        ASSIGNED_TO_CLIENT.len(),
    );
    Ok(())
}
