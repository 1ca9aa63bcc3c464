fn main() -> std::process::ExitCode {
    bus::main::<payments::Config>()
}
