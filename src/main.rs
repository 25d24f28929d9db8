//! The `cherry-bridge` command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use rand::RngCore;
use tracing_subscriber::EnvFilter;

use cherry_bridge::account::AccountType;
use cherry_bridge::cli::{Cli, Command, ServeArgs, TokenArgs};
use cherry_bridge::token::{self, SigningKey, TokenRequest};
use cherry_bridge::{Bridge, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime can be built");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Demo(args) => demo(args).await,
            Command::Token(args) => print_token(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cherry-bridge: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let key = args
        .signing_key()
        .map_err(|error| format!("cannot read --jwt-public-key: {error}"))?
        .ok_or("no token key: give --jwt-secret (CHERRY_JWT_SECRET) or --jwt-public-key")?;
    let agent_token = args
        .agent_token
        .clone()
        .filter(|token| !token.trim().is_empty())
        .ok_or("no agent token: give --agent-token (CHERRY_AGENT_TOKEN)")?;
    let tls = args.tls_identity().map_err(|error| error.to_string())?;
    let config = Config {
        tls,
        ..args.config(key, agent_token)
    };
    let bridge = Bridge::start(config)
        .await
        .map_err(|error| error.to_string())?;
    bridge.run_until_signal().await;
    Ok(())
}

async fn demo(args: ServeArgs) -> Result<(), String> {
    if args.jwt_public_key.is_some() {
        return Err(
            "the demo mints its own tokens and needs --jwt-secret, not --jwt-public-key".into(),
        );
    }
    if args.tls_cert.is_some() {
        return Err("the demo serves plain text on loopback; --tls-cert is for serve".into());
    }
    let given = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
    let secret = given(&args.jwt_secret).unwrap_or_else(random_secret);
    let agent_token = given(&args.agent_token).unwrap_or_else(random_secret);
    let key = SigningKey::Secret(secret.clone().into_bytes());
    let config = Config {
        persistence: args.demo_persistence(),
        ..args.config(key, agent_token)
    };
    cherry_bridge::demo::run(config, secret.as_bytes())
        .await
        .map_err(|error| error.to_string())
}

fn print_token(args: TokenArgs) -> Result<(), String> {
    let request = TokenRequest {
        account: args.account.unwrap_or_else(uuid::Uuid::new_v4),
        account_type: args.account_type.map(AccountType::from),
        permissions: args.permissions,
        lifetime: args.lifetime,
        token_type: if args.refresh { "refresh" } else { "access" }.to_owned(),
    };
    let token =
        token::mint(args.jwt_secret.as_bytes(), &request).map_err(|error| error.to_string())?;
    println!("{token}");
    Ok(())
}

/// 32 random bytes, hex-encoded.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
