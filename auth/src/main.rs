use common::config::load_or_exit;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = load_or_exit(auth::Config::from_env);
    let (port, grace) = (config.http.port, config.http.shutdown_grace);
    common::server::launch(port, grace, |listener, shutdown| {
        auth::run(config, listener, shutdown)
    })
    .await
}
