#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::cli::main::<client::Config>().await
}
