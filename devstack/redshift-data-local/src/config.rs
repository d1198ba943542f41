//! Command-line options (each with an environment variable) of the emulator.

use std::net::SocketAddr;

use clap::Parser;

use crate::unload::ZeroRowManifest;

/// An Amazon Redshift Data API emulator that runs SQL on PostgreSQL and writes UNLOAD output
/// to S3 (or any S3-compatible endpoint such as moto).
#[derive(Debug, Clone, Parser)]
#[command(name = "redshift-data-local", version)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, env = "RDL_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// PostgreSQL connection string without dbname (the request's Database is used), e.g.
    /// "host=127.0.0.1 port=54329 user=postgres".
    #[arg(long, env = "RDL_PG")]
    pub pg: String,

    /// S3 endpoint for UNLOAD output; by default the AWS environment decides
    /// (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, …).
    #[arg(long, env = "RDL_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Emulated slices: PARALLEL ON writes up to this many files per part number.
    #[arg(long, env = "RDL_SLICES", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=128))]
    pub slices: u16,

    /// Rows per GetStatementResult page.
    #[arg(long, env = "RDL_PAGE_ROWS", default_value_t = 1000)]
    pub page_rows: usize,

    /// Multipart part size for UNLOAD data files, in MiB (at least 5).
    #[arg(long, env = "RDL_PART_SIZE_MIB", default_value_t = 8, value_parser = clap::value_parser!(u16).range(5..=512))]
    pub part_size_mib: u16,

    /// What a MANIFEST UNLOAD of zero rows writes: a manifest with no entries, or nothing.
    #[arg(
        long,
        env = "RDL_ZERO_ROW_MANIFEST",
        value_enum,
        default_value = "empty"
    )]
    pub zero_row_manifest: ZeroRowManifest,

    /// Milliseconds between the SUBMITTED, PICKED and STARTED transitions.
    #[arg(long, env = "RDL_STEP_DELAY_MS", default_value_t = 20)]
    pub step_delay_ms: u64,

    /// Initial fault injection as JSON (the body of PUT /__admin/faults), e.g.
    /// '{"throttle_rate":0.2,"hold_statements":true}'.
    #[arg(long, env = "RDL_FAULTS")]
    pub faults: Option<String>,
}
