fn main() -> std::process::ExitCode {
    kit::main::<client::Config>()
}
