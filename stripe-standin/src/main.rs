//! `stripe-standin`: serves the stand-in on `BIND_ADDRESS` (default 127.0.0.1; a
//! container sets 0.0.0.0) and `PORT` (default 12111). If `STRIPE_KEY` is set, requests
//! must carry exactly that bearer key; otherwise any `sk_test_` key.

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(12111);
    let standin =
        stripe_standin::StandIn::new(std::env::var("STRIPE_KEY").ok().filter(|k| !k.is_empty()));
    let address: std::net::IpAddr = std::env::var("BIND_ADDRESS")
        .ok()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(address, port)).await?;
    tracing::info!(port, "Stripe stand-in listening");
    axum::serve(listener, standin.router()).await?;
    Ok(())
}
