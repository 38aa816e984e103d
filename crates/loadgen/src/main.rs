use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = loadgen::cli::Cli::parse();
    match loadgen::cli::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("loadgen: {err}");
            ExitCode::from(2)
        }
    }
}
