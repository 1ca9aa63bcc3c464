fn main() -> std::process::ExitCode {
    bus::main::<orders::Config>()
}
