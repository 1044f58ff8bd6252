//! The `aviary` command: parse the command line, run the subcommand.

fn main() -> std::process::ExitCode {
    aviary_host::cli::main()
}
