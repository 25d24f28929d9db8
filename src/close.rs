//! Why a WebSocket ends: every close code the bridge sends and the short
//! reason that goes with it. Reasons are fixed strings, so no token or other
//! secret can reach a client or a log through them.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// 1001: the bridge is shutting down.
    ShuttingDown,
    /// 1008: the subscribed scope needs a `machine_uuid`.
    MissingMachine,
    /// 1008: a `machine_uuid` is not a UUID.
    MalformedMachine,
    /// 1008: the client sent a frame over the configured bound, or broke the
    /// WebSocket protocol.
    BadClientFrame,
    /// 1011: the bridge failed in a way the client cannot fix.
    Internal,
    /// 1013: the bridge holds as many connections as it is allowed.
    ConnectionLimit,
    /// 1013: the client read too slowly and its event backlog passed the
    /// bound.
    TooFarBehind,
    /// 4401: no `access_token`.
    MissingToken,
    /// 4401: unreadable, badly signed, or lacking required claims.
    InvalidToken,
    /// 4401: past its `exp`, at connect time or during the session.
    TokenExpired,
    /// 4401: a refresh token or another non-access token.
    NotAccessToken,
    /// 4401: neither the directory nor the token describes the account.
    UnknownAccount,
    /// 4401: the directory marks the account disabled.
    AccountDisabled,
    /// 4403: `global` without `VIEW_ALL_VMS`.
    ViewAllRequired,
    /// 4403: a subscribed machine the account may not see, or that does not
    /// exist.
    MachineForbidden,
    /// 4403: the directory removed the account.
    AccountRemoved,
}

impl Close {
    pub fn code(self) -> u16 {
        match self {
            Close::ShuttingDown => 1001,
            Close::MissingMachine | Close::MalformedMachine | Close::BadClientFrame => 1008,
            Close::Internal => 1011,
            Close::ConnectionLimit | Close::TooFarBehind => 1013,
            Close::MissingToken
            | Close::InvalidToken
            | Close::TokenExpired
            | Close::NotAccessToken
            | Close::UnknownAccount
            | Close::AccountDisabled => 4401,
            Close::ViewAllRequired | Close::MachineForbidden | Close::AccountRemoved => 4403,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Close::ShuttingDown => "Bridge shutting down.",
            Close::MissingMachine => "Missing machine_uuid.",
            Close::MalformedMachine => "Malformed machine_uuid.",
            Close::BadClientFrame => "Client frame too large or malformed.",
            Close::Internal => "Internal error.",
            Close::ConnectionLimit => "Connection limit reached, try again later.",
            Close::TooFarBehind => "Client fell too far behind.",
            Close::MissingToken => "Missing access token.",
            Close::InvalidToken => "Invalid access token.",
            Close::TokenExpired => "Access token expired.",
            Close::NotAccessToken => "Not an access token.",
            Close::UnknownAccount => "Unknown account.",
            Close::AccountDisabled => "Account disabled.",
            Close::ViewAllRequired => "VIEW_ALL_VMS permission required.",
            Close::MachineForbidden => "Machine not accessible.",
            Close::AccountRemoved => "Account removed.",
        }
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}
