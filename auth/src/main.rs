fn main() -> std::process::ExitCode {
    bus::main::<auth::Config>()
}
