//! The `redshift-export-worker` binary; everything happens in the library.

fn main() -> std::process::ExitCode {
    redshift_export_worker::cli::main()
}
