fn main() -> std::process::ExitCode {
    bus::main::<tickets::Config>()
}
