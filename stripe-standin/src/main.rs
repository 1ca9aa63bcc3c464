//! `stripe-standin`: serves the stand-in until SIGTERM or Ctrl-C, then stops
//! accepting, lets requests in flight finish (a deliberately hanging one is given up
//! after the grace period) and exits 0.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// A local stand-in for the two Stripe endpoints Ticketing uses (charges and refunds),
/// with fault injection for tests.
#[derive(Debug, Parser)]
#[command(name = "stripe-standin")]
struct Cli {
    /// The address to listen on (a container sets 0.0.0.0).
    #[arg(long, env = "BIND_ADDRESS", default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The port to listen on.
    #[arg(long, env = "PORT", default_value_t = 12111)]
    port: u16,
    /// The one bearer key requests must carry; without it any `sk_test_` key.
    #[arg(long, env = "STRIPE_KEY", hide_env_values = true)]
    stripe_key: Option<String>,
    /// Seconds a stop may wait for requests in flight.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 5)]
    shutdown_grace_seconds: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_target(false).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("stripe-standin: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stripe-standin: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let standin = stripe_standin::StandIn::new(cli.stripe_key.filter(|key| !key.is_empty()));
    let address = SocketAddr::new(cli.bind_address, cli.port);
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "Stripe stand-in listening");
    let (stopping, stopped) = tokio::sync::oneshot::channel();
    let served = tokio::spawn(async move {
        standin
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    kit::service::terminated().await;
    tracing::info!("shutting down");
    let _ = stopping.send(());
    let grace = Duration::from_secs(cli.shutdown_grace_seconds);
    match tokio::time::timeout(grace, served).await {
        Ok(result) => result??,
        Err(_) => tracing::warn!("requests still in flight after the grace period; stopping"),
    }
    Ok(())
}
