//! Reading an upgrade request: which endpoint, which token, which machines.
//! A bad request is still upgraded and then closed with the code this
//! module decides, because a browser can only read a close code.

use uuid::Uuid;

use crate::close::Close;
use crate::fanout::Scope;

/// The three WebSocket endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Subscribed,
    Account,
    Global,
}

impl Endpoint {
    /// The endpoint at `path`, or `None` for any other path (HTTP 404).
    pub fn at(path: &str) -> Option<Self> {
        match path {
            "/ws/machines/subscribed" => Some(Endpoint::Subscribed),
            "/ws/machines/account" => Some(Endpoint::Account),
            "/ws/machines/global" => Some(Endpoint::Global),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Subscribed => "subscribed",
            Endpoint::Account => "account",
            Endpoint::Global => "global",
        }
    }
}

/// A well-formed request: the scope to open and the bearer token to check.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub scope: Scope,
    pub token: String,
}

/// Reads the query string. Shape comes before credentials: a request
/// without a usable `machine_uuid` is 1008 whatever its token.
pub fn parse(endpoint: Endpoint, query: Option<&str>) -> Result<Request, Close> {
    let mut token = None;
    let mut machines = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "access_token" if token.is_none() => token = Some(value.into_owned()),
            "machine_uuid" => machines.push(value.into_owned()),
            _ => {}
        }
    }

    let scope = match endpoint {
        Endpoint::Account => Scope::Account,
        Endpoint::Global => Scope::Global,
        Endpoint::Subscribed => Scope::Subscribed(machine_list(&machines)?),
    };
    let token = token
        .as_deref()
        .and_then(bearer)
        .ok_or(Close::MissingToken)?;
    Ok(Request {
        scope,
        token: token.to_owned(),
    })
}

/// The followed machines, parsed and without repeats, in request order.
fn machine_list(values: &[String]) -> Result<Vec<Uuid>, Close> {
    if values.is_empty() {
        return Err(Close::MissingMachine);
    }
    let mut machines: Vec<Uuid> = Vec::with_capacity(values.len());
    for value in values {
        let uuid = Uuid::try_parse(value.trim()).map_err(|_| Close::MalformedMachine)?;
        if !machines.contains(&uuid) {
            machines.push(uuid);
        }
    }
    Ok(machines)
}

/// The token itself, without an optional `Bearer ` prefix; `None` if empty.
fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let token = match value.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim_start(),
        None if value.eq_ignore_ascii_case("bearer") => "",
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_prefix_and_percent_encoding_are_accepted() {
        let request = parse(Endpoint::Account, Some("access_token=Bearer%20abc.def.ghi")).unwrap();
        assert_eq!(request.token, "abc.def.ghi");
        let request = parse(Endpoint::Account, Some("access_token=bearer+abc")).unwrap();
        assert_eq!(request.token, "abc");
    }

    #[test]
    fn subscribed_needs_a_well_formed_machine_uuid() {
        assert_eq!(
            parse(Endpoint::Subscribed, Some("access_token=t")),
            Err(Close::MissingMachine)
        );
        assert_eq!(
            parse(
                Endpoint::Subscribed,
                Some("access_token=t&machine_uuid=nope")
            ),
            Err(Close::MalformedMachine)
        );
        assert_eq!(
            parse(Endpoint::Subscribed, Some("machine_uuid=nope")),
            Err(Close::MalformedMachine)
        );
    }

    #[test]
    fn repeated_machine_uuids_are_followed_once_each() {
        let a = "6a1f0c8e-0a47-4c43-9d5e-6c3e64a7e0a1";
        let b = "0b6e1b0e-3f0c-4c1e-8f77-1f1b7d1ad5c2";
        let query = format!("access_token=t&machine_uuid={a}&machine_uuid={b}&machine_uuid={a}");
        let request = parse(Endpoint::Subscribed, Some(&query)).unwrap();
        let expected = vec![Uuid::parse_str(a).unwrap(), Uuid::parse_str(b).unwrap()];
        assert_eq!(request.scope, Scope::Subscribed(expected));
    }

    #[test]
    fn missing_or_empty_token_is_refused() {
        assert_eq!(parse(Endpoint::Global, None), Err(Close::MissingToken));
        assert_eq!(
            parse(Endpoint::Global, Some("access_token=Bearer%20")),
            Err(Close::MissingToken)
        );
    }
}
