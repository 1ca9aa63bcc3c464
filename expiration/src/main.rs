fn main() -> std::process::ExitCode {
    bus::main::<expiration::Config>()
}
