fn main() -> std::process::ExitCode {
    sluice_bench::main()
}
