fn main() -> std::process::ExitCode {
    kit::main::<auth::Config>()
}
