#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::cli::main::<tickets::Config>().await
}
