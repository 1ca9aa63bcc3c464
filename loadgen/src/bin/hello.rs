//! The ceiling of the HTTP benchmarks: a bare axum handler, nothing else
//! (`hello PORT`). Our services are measured as a share of what it serves.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "3999".into())
        .parse()?;
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
