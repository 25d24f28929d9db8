//! Accounts: who a token speaks for, what they may see, and how an account
//! is written into the JSON the frontends receive (`Administrator` or
//! `Client`).

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use uuid::Uuid;

/// Permission bit: may see every machine, and so open the `global` scope.
pub const VIEW_ALL_VMS: u64 = 1 << 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountType {
    Administrative,
    Client,
}

impl AccountType {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountType::Administrative => "administrative",
            AccountType::Client => "client",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "administrative" => Some(AccountType::Administrative),
            "client" => Some(AccountType::Client),
            _ => None,
        }
    }
}

/// An account as the platform describes it, either in the directory or
/// embedded in a machine's properties as its owner or an assigned client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub uuid: Uuid,
    pub username: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub creation_date: Option<NaiveDate>,
    pub last_active: Option<DateTime<Utc>>,
    pub disabled: bool,
    pub account_type: AccountType,
    /// Administrative accounts only; empty for clients.
    pub roles: Vec<Uuid>,
    /// Administrative accounts only; always 0 for clients.
    pub permissions: u64,
    /// Client accounts only; empty for administrators.
    pub groups: Vec<Uuid>,
}

impl Account {
    /// An account known by its UUID alone; every other field is unknown.
    pub fn bare(uuid: Uuid, account_type: AccountType) -> Self {
        Account {
            uuid,
            username: None,
            email: None,
            name: None,
            surname: None,
            creation_date: None,
            last_active: None,
            disabled: false,
            account_type,
            roles: Vec::new(),
            permissions: 0,
            groups: Vec::new(),
        }
    }
}

/// Writes the contract's `Administrator` or `Client` object, chosen by the
/// account type, with the fields in the contract's order.
impl Serialize for Account {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Account", 11)?;
        out.serialize_field("uuid", &self.uuid)?;
        out.serialize_field("username", &self.username)?;
        out.serialize_field("email", &self.email)?;
        out.serialize_field("name", &self.name)?;
        out.serialize_field("surname", &self.surname)?;
        let creation_date = self
            .creation_date
            .map(|date| date.format("%Y-%m-%d").to_string());
        out.serialize_field("creation_date", &creation_date)?;
        out.serialize_field("last_active", &self.last_active)?;
        out.serialize_field("disabled", &self.disabled)?;
        out.serialize_field("account_type", self.account_type.as_str())?;
        match self.account_type {
            AccountType::Administrative => {
                out.serialize_field("roles", &self.roles)?;
                out.serialize_field("permissions", &self.permissions)?;
            }
            AccountType::Client => out.serialize_field("groups", &self.groups)?,
        }
        out.end()
    }
}

/// The account a connection acts for, as decided when it was admitted and
/// updated when the directory changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal {
    pub account: Uuid,
    pub account_type: AccountType,
    pub permissions: u64,
}

impl Principal {
    /// Permissions only count for administrative accounts.
    pub fn may_view_all(&self) -> bool {
        self.account_type == AccountType::Administrative && self.permissions & VIEW_ALL_VMS != 0
    }

    /// Whether this principal sees a machine shown to `audience` (its owner
    /// and assigned clients).
    pub fn sees(&self, audience: &Audience) -> bool {
        self.may_view_all() || audience.contains(&self.account)
    }
}

/// The accounts that see a machine without `VIEW_ALL_VMS`: its owner and its
/// assigned clients.
pub type Audience = HashSet<Uuid>;
