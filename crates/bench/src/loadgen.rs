//! Runs the loadgen binary (a separate process, as a real client would be)
//! and reads its JSON summary.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use loadgen::report::{BaselineSummary, LoadShape, Summary};
use serde::de::DeserializeOwned;

pub struct Loadgen {
    program: PathBuf,
}

impl Loadgen {
    pub fn new() -> Self {
        Self {
            program: catga_tests::binary("loadgen"),
        }
    }

    pub fn program(&self) -> &PathBuf {
        &self.program
    }

    async fn json<T: DeserializeOwned>(&self, args: &[String]) -> anyhow::Result<T> {
        let output = tokio::process::Command::new(&self.program)
            .args(args)
            .args(["--json", "--quiet"])
            // Orders carry a token per customer, signed with the secret the
            // test system's order-api validates (the environment keeps it
            // out of the process list).
            .env(loadgen::cli::JWT_SECRET_ENV, catga_tests::JWT_SECRET)
            .stdin(Stdio::null())
            .output()
            .await
            .context("cannot run loadgen")?;
        // Exit 1 only says some requests failed; the summary tells which.
        if output.status.code() == Some(2) || output.stdout.is_empty() {
            bail!(
                "loadgen {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        serde_json::from_slice(&output.stdout).context("loadgen's JSON summary")
    }

    /// `loadgen orders` with `load` for `duration`; `follow: false` stops at 202.
    pub async fn orders(
        &self,
        url: &str,
        load: LoadShape,
        duration: Duration,
        follow: bool,
    ) -> anyhow::Result<Summary> {
        let mut args = vec![
            "orders".to_owned(),
            "--url".to_owned(),
            url.to_owned(),
            "--duration".to_owned(),
            humantime::format_duration(duration).to_string(),
        ];
        args.extend(match load {
            LoadShape::FixedRate { per_second } => {
                ["--rate".to_owned(), format!("{per_second:.1}")]
            }
            LoadShape::Concurrency { clients } => ["--concurrency".to_owned(), clients.to_string()],
        });
        if !follow {
            args.push("--no-follow".to_owned());
        }
        self.json(&args).await
    }

    pub async fn jetstream(
        &self,
        nats: &str,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<BaselineSummary> {
        let mut args = vec!["jetstream".to_owned(), "--nats".to_owned(), nats.to_owned()];
        args.extend(baseline(concurrency, duration));
        self.json(&args).await
    }

    pub async fn redis(
        &self,
        redis: &str,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<BaselineSummary> {
        let mut args = vec!["redis".to_owned(), "--redis".to_owned(), redis.to_owned()];
        args.extend(baseline(concurrency, duration));
        self.json(&args).await
    }
}

fn baseline(concurrency: usize, duration: Duration) -> Vec<String> {
    vec![
        "--concurrency".to_owned(),
        concurrency.to_string(),
        "--duration".to_owned(),
        humantime::format_duration(duration).to_string(),
    ]
}
