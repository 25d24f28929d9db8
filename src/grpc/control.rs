//! The control service: what a control plane or an operator with grpcurl
//! does by hand. Each call validates fully before touching the registry,
//! and answers a change only once the store holds it.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

use crate::bridge::Shared;
use crate::grpc::proto::{self, control_service_server::ControlService};
use crate::grpc::validate::{self, FieldError};
use crate::grpc::view;

pub struct Control {
    shared: Arc<Shared>,
}

impl Control {
    pub fn new(shared: Arc<Shared>) -> Self {
        Control { shared }
    }
}

/// Logs a rejected request and turns it into INVALID_ARGUMENT.
fn rejected(call: &'static str) -> impl Fn(FieldError) -> Status {
    move |error| {
        warn!(
            call,
            field = error.field,
            reason = error.reason,
            "control request rejected"
        );
        Status::from(error)
    }
}

impl Control {
    /// Waits until every change made so far, this call's included, is on
    /// disk. An unchanged upsert waits too: an identical change from
    /// another caller may still be on its way to disk.
    async fn stored(&self, call: &'static str) -> Result<(), Status> {
        let durable = self.shared.registry.journal().barrier();
        durable.wait().await.map_err(|failure| {
            error!(call, error = %failure, "change applied but not stored");
            Status::unavailable(format!("the change was applied but not stored: {failure}"))
        })
    }
}

fn not_found(what: &str, uuid: uuid::Uuid) -> Status {
    Status::not_found(format!("no {what} {uuid}"))
}

#[tonic::async_trait]
impl ControlService for Control {
    async fn upsert_machine(
        &self,
        request: Request<proto::UpsertMachineRequest>,
    ) -> Result<Response<proto::UpsertMachineResponse>, Status> {
        let request = request.into_inner();
        let (uuid, facts) = validate::required("machine", &request.machine)
            .and_then(|machine| validate::decision("machine", machine))
            .map_err(rejected("UpsertMachine"))?;
        let change = self.shared.registry.upsert_platform_facts(uuid, facts);
        self.stored("UpsertMachine").await?;
        info!(machine = %uuid, ?change, "machine upserted by control plane");
        Ok(Response::new(proto::UpsertMachineResponse {
            outcome: view::outcome(change),
        }))
    }

    async fn remove_machine(
        &self,
        request: Request<proto::RemoveMachineRequest>,
    ) -> Result<Response<proto::RemoveMachineResponse>, Status> {
        let uuid =
            validate::uuid("uuid", &request.get_ref().uuid).map_err(rejected("RemoveMachine"))?;
        self.shared
            .registry
            .remove_machine(uuid)
            .map_err(|_| not_found("machine", uuid))?;
        self.stored("RemoveMachine").await?;
        info!(machine = %uuid, "machine removed by control plane");
        Ok(Response::new(proto::RemoveMachineResponse {}))
    }

    async fn publish_event(
        &self,
        request: Request<proto::PublishEventRequest>,
    ) -> Result<Response<proto::PublishEventResponse>, Status> {
        let request = request.into_inner();
        let (uuid, kind, error) = validate::required("event", &request.event)
            .and_then(|event| validate::lifecycle("event", event))
            .map_err(rejected("PublishEvent"))?;
        self.shared
            .registry
            .publish(uuid, kind, error.as_deref())
            .map_err(|_| not_found("machine", uuid))?;
        Ok(Response::new(proto::PublishEventResponse {}))
    }

    async fn list_machines(
        &self,
        _request: Request<proto::ListMachinesRequest>,
    ) -> Result<Response<proto::ListMachinesResponse>, Status> {
        let machines = self.shared.registry.machines();
        Ok(Response::new(proto::ListMachinesResponse {
            machines: machines.iter().map(view::machine).collect(),
        }))
    }

    async fn get_machine(
        &self,
        request: Request<proto::GetMachineRequest>,
    ) -> Result<Response<proto::MachineView>, Status> {
        let uuid =
            validate::uuid("uuid", &request.get_ref().uuid).map_err(rejected("GetMachine"))?;
        let machine = self
            .shared
            .registry
            .machine(uuid)
            .ok_or_else(|| not_found("machine", uuid))?;
        Ok(Response::new(view::machine(&machine)))
    }

    async fn upsert_account(
        &self,
        request: Request<proto::UpsertAccountRequest>,
    ) -> Result<Response<proto::UpsertAccountResponse>, Status> {
        let request = request.into_inner();
        let account = validate::required("account", &request.account)
            .and_then(|account| validate::account("account", account, None))
            .map_err(rejected("UpsertAccount"))?;
        let uuid = account.uuid;
        let change = self.shared.registry.upsert_account(account);
        self.stored("UpsertAccount").await?;
        info!(account = %uuid, ?change, "account upserted");
        Ok(Response::new(proto::UpsertAccountResponse {
            outcome: view::outcome(change),
        }))
    }

    async fn remove_account(
        &self,
        request: Request<proto::RemoveAccountRequest>,
    ) -> Result<Response<proto::RemoveAccountResponse>, Status> {
        let uuid =
            validate::uuid("uuid", &request.get_ref().uuid).map_err(rejected("RemoveAccount"))?;
        if !self.shared.registry.remove_account(uuid) {
            return Err(not_found("account", uuid));
        }
        self.stored("RemoveAccount").await?;
        info!(account = %uuid, "account removed");
        Ok(Response::new(proto::RemoveAccountResponse {}))
    }

    async fn list_accounts(
        &self,
        _request: Request<proto::ListAccountsRequest>,
    ) -> Result<Response<proto::ListAccountsResponse>, Status> {
        let accounts = self.shared.registry.accounts();
        Ok(Response::new(proto::ListAccountsResponse {
            accounts: accounts.iter().map(view::account).collect(),
        }))
    }
}
