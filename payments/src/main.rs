#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::cli::main::<payments::Config>().await
}
