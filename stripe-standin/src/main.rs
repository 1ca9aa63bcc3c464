//! `stripe-standin`: serves the stand-in on `PORT` (default 12111). If `STRIPE_KEY` is
//! set, requests must carry exactly that bearer key; otherwise any `sk_test_` key.

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
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    tracing::info!(port, "Stripe stand-in listening");
    axum::serve(listener, standin.router()).await?;
    Ok(())
}
