//! Command-line interface: what each subcommand takes, and running it.

use std::{io::Write, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use catga_core::domain::default_catalog;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::{
    Error,
    auth::{LoadAuth, Redacted},
    baseline,
    driver::{self, Counters, Plan},
    progress,
    report::LoadShape,
    workload::{ProductMix, Workload},
};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for the Catga order API, and the baselines it is measured against"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Place orders on order-api and follow each to its final state.
    Orders(OrdersArgs),
    /// Serve an HTTP echo (the ceiling baseline; also a webhook sink).
    EchoServer {
        #[arg(long, env = "LOADGEN_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Measure JetStream publish-with-ack throughput.
    Jetstream {
        /// NATS server URLs, comma-separated.
        #[arg(
            long,
            env = "LOADGEN_NATS",
            default_value = "nats://127.0.0.1:4222",
            value_delimiter = ','
        )]
        nats: Vec<String>,
        /// Size of each message (a PlaceOrder command is about 400 bytes).
        #[arg(long, default_value_t = 400)]
        payload_bytes: usize,
        #[command(flatten)]
        run: BaselineArgs,
    },
    /// Measure Redis SET NX EX throughput.
    Redis {
        /// Redis, written as `Redis__Configuration` (host:port[,password=…]).
        #[arg(long, env = "LOADGEN_REDIS", default_value = "127.0.0.1:6379")]
        redis: String,
        #[command(flatten)]
        run: BaselineArgs,
    },
}

#[derive(Debug, Args)]
pub struct OrdersArgs {
    /// order-api's base URL.
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Open loop: start this many orders per second whatever the answers do.
    #[arg(long, env = "LOADGEN_RATE", conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: this many clients, each placing an order and following
    /// it to its final state before the next (the default, with 32).
    #[arg(long, env = "LOADGEN_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// How long to start orders for (e.g. 30s, 5m).
    #[arg(long, env = "LOADGEN_DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Products and their weights: PRODUCT[=WEIGHT],…
    #[arg(long, env = "LOADGEN_PRODUCTS", default_value_t = default_products())]
    pub products: ProductMix,
    /// Lines per order (distinct products).
    #[arg(long, default_value_t = 1)]
    pub lines: usize,
    /// Each line's quantity is drawn from 1 to this.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_quantity: u32,
    /// Orders are spread over this many customers.
    #[arg(long, default_value_t = 1000)]
    pub customers: u64,
    /// Send an Idempotency-Key with every order.
    #[arg(long, env = "LOADGEN_IDEMPOTENCY_KEYS")]
    pub idempotency_keys: bool,
    /// Stop at 202: do not follow orders to their final state.
    #[arg(long)]
    pub no_follow: bool,
    /// An order not final this long after it was placed counts as unfinished.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub follow_timeout: Duration,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Open loop: at most this many POSTs in flight.
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Send `Authorization: Bearer <token>`; every order is then the
    /// token's `sub` customer's. Prefer the environment variable: arguments
    /// are visible to other users of the machine.
    #[arg(
        long,
        env = "LOADGEN_TOKEN",
        hide_env_values = true,
        conflicts_with = "jwt_secret"
    )]
    pub token: Option<Redacted>,
    /// order-api's `Auth__JwtSecret`: mint an HS256 token per customer, so
    /// each customer's orders are placed and followed with its own token.
    #[arg(long, env = JWT_SECRET_ENV, hide_env_values = true)]
    pub jwt_secret: Option<Redacted>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Operations in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// No progress on standard error.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The environment variable of `--jwt-secret` (the way to pass it without
/// showing it in the process list).
pub const JWT_SECRET_ENV: &str = "LOADGEN_JWT_SECRET";

/// Closed-loop clients when neither --rate nor --concurrency is given.
pub const DEFAULT_CONCURRENCY: usize = 32;

fn default_products() -> ProductMix {
    let ids: Vec<String> = default_catalog()
        .into_iter()
        .map(|p| p.product_id)
        .collect();
    // The default catalog is non-empty with distinct ids.
    ids.join(",")
        .parse()
        .unwrap_or_else(|_| unreachable!("the default catalog is a valid product mix"))
}

impl OrdersArgs {
    pub fn plan(&self) -> Plan {
        let load = match (self.rate, self.concurrency) {
            (Some(per_second), _) => LoadShape::FixedRate { per_second },
            (None, clients) => LoadShape::Concurrency {
                clients: clients.unwrap_or(DEFAULT_CONCURRENCY),
            },
        };
        Plan {
            base_url: self.url.clone(),
            load,
            duration: self.duration,
            workload: Workload {
                products: self.products.clone(),
                lines: self.lines,
                max_quantity: self.max_quantity,
                customers: self.customers,
                idempotency_prefix: self
                    .idempotency_keys
                    .then(|| format!("loadgen-{}", uuid::Uuid::now_v7().simple())),
                fixed_customer: None,
            },
            auth: match (&self.token, &self.jwt_secret) {
                (Some(token), _) => LoadAuth::Token(token.clone()),
                (None, Some(secret)) => LoadAuth::PerCustomer(secret.clone()),
                (None, None) => LoadAuth::None,
            },
            follow: !self.no_follow,
            follow_timeout: self.follow_timeout,
            request_timeout: self.request_timeout,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// Runs a command. Orders: exit 1 when any request failed or any order did
/// not finish, so a Job or a script notices.
pub async fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Orders(args) => {
            let plan = args.plan();
            let counters = Arc::new(Counters::default());
            let done = catga_core::CancellationToken::new();
            let display = progress::Display::for_stderr(args.output.quiet);
            let shown = progress::spawn(display, counters.clone(), plan.duration, done.clone());
            let summary = driver::run(plan, counters).await;
            done.cancel();
            let _ = shown.await;
            let summary = summary?;
            print(&summary, args.output.json)?;
            Ok(if summary.error_count() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::EchoServer { listen } => {
            let listener = TcpListener::bind(listen).await?;
            eprintln!("echo server listening on {}", listener.local_addr()?);
            let shutdown = catga_core::CancellationToken::new();
            catga_core::shutdown::until_signalled(
                &shutdown,
                baseline::serve_echo(listener, shutdown.clone()),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Jetstream {
            nats,
            payload_bytes,
            run,
        } => {
            let summary =
                baseline::jetstream_publish(&nats, run.concurrency, run.duration, payload_bytes)
                    .await?;
            print(&summary, run.output.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Redis { redis, run } => {
            let summary = baseline::redis_set_nx(&redis, run.concurrency, run.duration).await?;
            print(&summary, run.output.json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print<T: Serialize + std::fmt::Display>(summary: &T, json: bool) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, summary)?;
        writeln!(out)?;
    } else {
        write!(out, "{summary}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_a_closed_loop_over_the_default_catalog() {
        let cli = Cli::try_parse_from(["loadgen", "orders"]).expect("parses");
        let Command::Orders(args) = cli.command else {
            panic!("orders expected")
        };
        let plan = args.plan();
        assert_eq!(
            plan.load,
            LoadShape::Concurrency {
                clients: DEFAULT_CONCURRENCY
            }
        );
        assert_eq!(plan.workload.products.len(), default_catalog().len());
        assert!(plan.follow);
        assert!(plan.workload.idempotency_prefix.is_none());
    }

    #[test]
    fn a_token_or_a_secret_authenticates_the_run() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["loadgen", "orders"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        let plan = |cli: Cli| {
            let Command::Orders(args) = cli.command else {
                panic!("orders expected")
            };
            args.plan()
        };
        assert_eq!(plan(parse(&[]).expect("parses")).auth, LoadAuth::None);
        let with_secret = plan(parse(&["--jwt-secret", "s3cret"]).expect("parses"));
        assert_eq!(
            with_secret.auth,
            LoadAuth::PerCustomer("s3cret".parse().expect("infallible"))
        );
        assert!(!format!("{with_secret:?}").contains("s3cret"));
        let with_token = plan(parse(&["--token", "a.b.c"]).expect("parses"));
        assert_eq!(
            with_token.auth,
            LoadAuth::Token("a.b.c".parse().expect("infallible"))
        );
        assert!(parse(&["--token", "a.b.c", "--jwt-secret", "s3cret"]).is_err());
    }

    #[test]
    fn rate_and_concurrency_exclude_each_other() {
        let both = Cli::try_parse_from(["loadgen", "orders", "--rate", "10", "--concurrency", "2"]);
        assert!(both.is_err());
        let cli = Cli::try_parse_from(["loadgen", "orders", "--rate", "250", "--duration", "2m"])
            .expect("parses");
        let Command::Orders(args) = cli.command else {
            panic!("orders expected")
        };
        let plan = args.plan();
        assert_eq!(plan.load, LoadShape::FixedRate { per_second: 250.0 });
        assert_eq!(plan.duration, Duration::from_secs(120));
    }
}
