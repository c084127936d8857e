//! The `sluice` command line.

pub mod client;
mod dev;
pub mod kafka_tools;
mod pipeline_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::api::{self, ApiConfig, AppState};
use crate::pipeline::{self, RunOptions};
use crate::runtime::Runtime;
use crate::spec;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kafka micro-batches through sandboxed WebAssembly transforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// This process's identity in its pipelines' consumer groups.
#[derive(Debug, clap::Args)]
struct Instance {
    /// A name for this process that stays the same across its restarts and
    /// differs from every other process running the same pipelines (e.g. a
    /// StatefulSet pod's name): static group membership, so that a restarted
    /// process takes its tasks back at once, instead of after the session
    /// timeout of the member it replaces.
    #[arg(long, env = "SLUICE_INSTANCE_ID", value_name = "NAME")]
    instance_id: Option<String>,
}

impl Instance {
    fn apply(self) -> anyhow::Result<()> {
        if let Some(id) = self.instance_id {
            pipeline::set_instance(id)?;
        }
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one pipeline from a spec file until stopped (SIGINT/SIGTERM).
    Run {
        /// The pipeline spec (YAML or JSON).
        spec: PathBuf,
        /// Drain the source topics up to the end offsets seen at start, commit, and exit 0.
        /// With several processes in the pipeline's group: until the group's committed
        /// positions reach them, whoever processed the records.
        #[arg(long)]
        until_caught_up: bool,
        #[command(flatten)]
        instance: Instance,
    },
    /// Run one pipeline like `run`, rebuilding its guests (found through
    /// cargo) when their source files change and swapping each new build in
    /// without a restart. A failed build leaves the running version alone.
    Dev {
        /// The pipeline spec (YAML or JSON), in the guests' cargo workspace.
        spec: PathBuf,
    },
    /// Check a spec without running it: fields, limits, modules (compiled and
    /// started, with their config). Needs no Kafka.
    Validate {
        /// The pipeline spec (YAML or JSON).
        spec: PathBuf,
    },
    /// Create Kafka topics (an existing topic is left as it is).
    CreateTopics {
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Produce a deterministic sample stream of events
    /// `{event_id, user_id, event_type, timestamp, amount}`, keyed by user.
    Sample {
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        #[arg(long, default_value_t = 50)]
        users: u64,
        /// Make every n-th record malformed JSON (0: none).
        #[arg(long, default_value_t = 0)]
        malformed_every: u64,
        /// Instead of events: readings `{strategy, value, ts}` of this
        /// strategy (the tutorial's A-D), keyed by sensor (`--users` of
        /// them), ten seconds apart.
        #[arg(long)]
        readings: Option<String>,
        /// With `--readings`: shift their times by this many seconds.
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        offset_s: i64,
        /// With `--readings`: milliseconds between two readings.
        #[arg(long, default_value_t = 10_000)]
        every_ms: i64,
    },
    /// Print every record of a topic as a JSON line, then exit.
    Tail {
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Print at most this many records.
        #[arg(long)]
        max: Option<usize>,
        topic: String,
    },
    /// Serve the control plane's HTTP API (the module store, the pipelines)
    /// until SIGINT/SIGTERM. Prints `listening on http://ADDR` when ready.
    Serve {
        /// Data directory; modules are kept under DIR/modules.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Run the pipeline of this spec file (repeatable). The file is
        /// trusted as `sluice run` trusts its spec (modules are component
        /// files, checkpoints and outputs go where it says, relative paths
        /// from its directory) and checked at start like `sluice validate`
        /// checks it: an error stops the server, naming the file. The file
        /// wins, like a Kubernetes ConfigMap: it is read at every start and
        /// never stored in DIR, its pipeline runs at every start whatever
        /// was paused or stopped through the API before, and a pipeline of
        /// the same name created through the API is set aside (kept, not
        /// run) while the file is given. Through the API its modules cannot
        /// be swapped nor the pipeline deleted: change the file and restart.
        #[arg(long = "pipeline", value_name = "FILE")]
        pipelines: Vec<PathBuf>,
        /// Address to listen on; anything but loopback needs a token.
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: String,
        /// File holding the bearer token that every change (POST, PUT,
        /// DELETE) must carry, on its first line; only its owner may read it
        /// (mode 600). Default: $SLUICE_TOKEN. Reads stay open.
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// A host name the server also answers to (repeatable), besides
        /// 127.0.0.1, [::1] and localhost: the `Host` of any other request
        /// is refused (421), against DNS rebinding.
        #[arg(long = "allow-host", value_name = "NAME")]
        allow_hosts: Vec<String>,
        /// Most pipelines the server holds; creating more is refused (507).
        #[arg(long, default_value_t = api::DEFAULT_MAX_PIPELINES)]
        max_pipelines: usize,
        /// Most module versions the store holds, all modules together;
        /// uploading more is refused (507).
        #[arg(long, default_value_t = api::DEFAULT_MAX_MODULE_VERSIONS)]
        max_module_versions: usize,
        /// Most uploads checked (compiled, init tried) at once; more are
        /// told to retry (503). Default: half the cores, at least 1.
        #[arg(long)]
        max_checks: Option<usize>,
        /// Largest module accepted.
        #[arg(long, default_value = "32MiB")]
        max_upload: bytesize::ByteSize,
        /// A directory (besides the pipeline's own, under DIR/pipelines)
        /// where specs may put checkpoints and Parquet files by absolute
        /// path, or an `s3://bucket/prefix` where they may keep checkpoints
        /// (with the server's AWS credentials). Repeatable.
        #[arg(long = "allow-dir", value_name = "DIR")]
        allow_dir: Vec<PathBuf>,
        #[command(flatten)]
        instance: Instance,
    },
    /// Upload, list and delete the modules of a running `sluice serve`.
    Module(client::ModuleArgs),
    /// Create, list, pause, resume, swap modules of and delete the pipelines
    /// of a running `sluice serve`.
    Pipeline(pipeline_cmd::PipelineArgs),
}

/// Entry point of the `sluice` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // delta-rs warns at every merge about a metric its own plan does not
    // report; a user asking for its logs gets them.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("deltalake")) {
        filter = filter.add_directive(
            "deltalake_core::operations::merge=error"
                .parse()
                .expect("a valid directive"),
        );
    }
    // Colours only on a terminal: logs redirected to a file stay plain text.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            spec,
            until_caught_up,
            instance,
        } => {
            instance.apply()?;
            run(&spec, RunOptions { until_caught_up })
        }
        Command::Dev { spec } => dev::dev(&spec),
        Command::Validate { spec } => validate(&spec),
        Command::CreateTopics {
            brokers,
            partitions,
            topics,
        } => {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            kafka_tools::create_topics(&brokers, &topics, partitions)
        }
        Command::Sample {
            brokers,
            topic,
            count,
            users,
            readings: Some(strategy),
            offset_s,
            every_ms,
            ..
        } => {
            let n = kafka_tools::produce_readings(
                &brokers, &topic, &strategy, count, users, offset_s, every_ms,
            )?;
            eprintln!("produced {n} readings of strategy {strategy} to {topic}");
            Ok(())
        }
        Command::Sample {
            brokers,
            topic,
            count,
            users,
            malformed_every,
            ..
        } => {
            let options = kafka_tools::SampleOptions {
                count,
                users,
                malformed_every,
                ..Default::default()
            };
            let n = kafka_tools::produce_sample(&brokers, &topic, &options)?;
            eprintln!("produced {n} events to {topic}");
            Ok(())
        }
        Command::Tail {
            brokers,
            max,
            topic,
        } => {
            use std::io::Write;
            let records = kafka_tools::read_topic(&brokers, &topic)?;
            let mut stdout = std::io::stdout().lock();
            for record in records.iter().take(max.unwrap_or(usize::MAX)) {
                match writeln!(stdout, "{}", serde_json::to_string(record)?) {
                    // A reader that stopped early (`| head`) is not an error.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                    other => other?,
                }
            }
            Ok(())
        }
        Command::Serve {
            data,
            pipelines,
            listen,
            token_file,
            allow_hosts,
            max_upload,
            allow_dir,
            max_pipelines,
            max_module_versions,
            max_checks,
            instance,
        } => {
            instance.apply()?;
            let limits = ApiConfig {
                max_upload: max_upload.as_u64(),
                max_pipelines,
                max_module_versions,
                max_checks: max_checks.unwrap_or_else(api::default_max_checks).max(1),
                ..ApiConfig::default()
            };
            serve(
                &data,
                &pipelines,
                &listen,
                token_file.as_deref(),
                allow_hosts,
                limits,
                &allow_dir,
            )
        }
        Command::Module(args) => client::run(args),
        Command::Pipeline(args) => pipeline_cmd::run(args),
    }
}

fn serve(
    data: &std::path::Path,
    pipelines: &[PathBuf],
    listen: &str,
    token_file: Option<&std::path::Path>,
    mut allow_hosts: Vec<String>,
    limits: ApiConfig,
    allow_dir: &[PathBuf],
) -> anyhow::Result<()> {
    // Everything the server writes (pipeline documents, modules,
    // checkpoints, outputs) is this user's alone: specs carry secrets.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let token = match token_file {
        Some(path) => Some(client::read_token_file(path)?),
        None => std::env::var("SLUICE_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(listen)
        .with_context(|| format!("--listen {listen}: not an address"))?
        .collect();
    for addr in &addrs {
        api::check_exposure(*addr, token.as_deref()).map_err(anyhow::Error::msg)?;
    }
    // Listening beyond loopback (with a token): the name it listens by is
    // one the server answers to.
    if let Some(name) = listen.rsplit_once(':').map(|(host, _)| host)
        && !addrs.iter().all(|a| a.ip().is_loopback())
        && !name.is_empty()
        && !addrs
            .iter()
            .any(|a| a.ip().is_unspecified() && name.parse::<std::net::IpAddr>().is_ok())
    {
        allow_hosts.push(name.to_owned());
    }
    let store = crate::registry::ModuleStore::open(data)
        .with_context(|| format!("cannot open the module store in {}", data.display()))?;
    let config = ApiConfig {
        token,
        allowed_hosts: allow_hosts,
        ..limits
    };
    let state = AppState::new(store, Runtime::new()?, config);
    let manager = std::sync::Arc::new(
        crate::manager::Manager::open(data, state.store.clone(), allow_dir)
            .with_context(|| format!("cannot open the pipelines in {}", data.display()))?,
    );
    for path in pipelines {
        let shown = path.display();
        let file = crate::manager::SpecFile::load(path, &state.runtime)
            .with_context(|| format!("--pipeline {shown}"))?;
        tracing::info!("pipeline {}: defined by {shown}", file.name());
        manager
            .define(file)
            .with_context(|| format!("--pipeline {shown}"))?;
    }
    manager.restore();
    manager
        .supervise()
        .context("cannot start the pipeline supervisor")?;
    let state = state.with_pipelines(manager.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addrs[..])
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        tracing::info!(
            "serving the API on http://{local}, data in {}",
            data.display()
        );
        println!("listening on http://{local}");
        api::serve(listener, state, async {
            shutdown_signal().await;
            tracing::info!("shutdown requested; finishing the requests in flight");
        })
        .await
        .context("the API server failed")
    })?;
    tracing::info!("stopping the pipelines after their current batch");
    manager.shutdown();
    Ok(())
}

fn validate(path: &std::path::Path) -> anyhow::Result<()> {
    let spec = spec::load(path)?;
    let runtime = Runtime::new()?;
    let steps = pipeline::load_steps(&spec, &runtime)?;
    println!("{}: pipeline `{}` is valid", path.display(), spec.name);
    for (t, step) in spec.transforms.iter().zip(&steps) {
        let module = pipeline::step_module(step);
        let kind = if t.aggregate.is_some() {
            "aggregate"
        } else if t.join.is_some() {
            "join"
        } else {
            "transform"
        };
        println!(
            "  step {} ({kind}): {} ({} bytes, sha256 {})",
            t.step_name(),
            t.module.display(),
            module.size(),
            &module.sha256()[..16]
        );
    }
    for (name, output) in &spec.outputs {
        if let Some(p) = &output.postgres {
            let table = crate::sink::PostgresSink::check(p)
                .with_context(|| format!("outputs.{name}.postgres"))?;
            println!("  output {name}: {table}");
        }
        if let Some(d) = &output.delta {
            let s3 = spec
                .checkpoint
                .as_ref()
                .map(|c| c.s3.clone())
                .unwrap_or_default();
            let table = crate::sink::DeltaSink::check(d, &s3)
                .with_context(|| format!("outputs.{name}.delta"))?;
            println!("  output {name}: {table}");
        }
    }
    println!("  {}", how_it_runs(&spec));
    Ok(())
}

/// How `spec` runs: whole, or as tasks on how many workers, and through
/// which repartition topic.
fn how_it_runs(spec: &spec::PipelineSpec) -> String {
    use spec::Parallelism;
    let workers = match spec.parallelism {
        Parallelism::Workers(n) if n.get() == 1 => {
            return "runs whole (parallelism 1): one run loop over every partition".to_owned();
        }
        Parallelism::Workers(n) => format!("{n} workers"),
        _ => format!(
            "{} workers (auto: the cores this process may use)",
            spec.parallelism.workers(usize::MAX)
        ),
    };
    let mut line = format!("runs as tasks, one per source partition number, on at most {workers}");
    if let Some(stages) = spec.stages() {
        line.push_str(&format!(
            "; step {} aggregates through the repartition topic `{}` (created with the source's \
             partition count if missing)",
            spec.transforms[stages.step].step_name(),
            stages.topic
        ));
    }
    line
}

fn run(path: &std::path::Path, options: RunOptions) -> anyhow::Result<()> {
    let spec = spec::load(path)?;
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(async {
        let stopper = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested; finishing the current batch");
            stopper.store(true, Ordering::Relaxed);
        });
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || pipeline::run(&spec, options, &stop))
            .await
            .context("the pipeline thread panicked")?
    })?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
