//! `sluice pipeline create|ls|show|stop|start|pause|resume|swap|rm`: the
//! pipelines of a running `sluice serve`, through its API (the routes are
//! described in `api/pipelines.rs`). Like `sluice module`, a refusal is the
//! server's message, printed as `error: <message>` with a non-zero exit.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Value, json};

use super::client::{Client, ServerArgs, text};
use crate::manager::ManagerError;
use crate::registry::validate_name;

/// `sluice pipeline ...`.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: PipelineCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PipelineCommand {
    /// Create a pipeline from a spec file and start it.
    ///
    /// The spec is the one `sluice run` reads (YAML or JSON), except that
    /// each transform's `module` is `name` or `name@version` of a module
    /// pushed to the server (`sluice module push`).
    Create { spec: PathBuf },
    /// List the pipelines: status, modules, input rows, rows/s and lag.
    Ls,
    /// Print a pipeline's status document (JSON).
    Show { name: String },
    /// Stop a pipeline after its current batch.
    Stop { name: String },
    /// Start a stopped or failed pipeline (a paused one resumes).
    Start { name: String },
    /// Pause a running pipeline after its current batch.
    ///
    /// Its outputs are acknowledged and its offsets committed first. It
    /// stays paused across server restarts until resumed.
    Pause { name: String },
    /// Resume a paused pipeline.
    Resume { name: String },
    /// Run another module (or version) in a step, from the next batch.
    ///
    /// The new module is on trial for its first batch with records: if it
    /// fails, the previous one runs on, and this exits non-zero.
    Swap {
        name: String,
        /// `name` (its latest version) or `name@version`.
        module: String,
        /// The step to swap (needed when the pipeline has several).
        #[arg(long)]
        step: Option<String>,
    },
    /// Stop a pipeline and delete it (its data directory is kept).
    Rm { name: String },
}

/// Runs `sluice pipeline ...`.
pub fn run(args: PipelineArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    match args.command {
        PipelineCommand::Create { spec } => {
            let bytes =
                std::fs::read(&spec).with_context(|| format!("cannot read {}", spec.display()))?;
            let doc = client
                .request("POST", "/v1/pipelines", Some(&bytes))?
                .ok()?;
            println!("created {}", state_line(&doc));
        }
        PipelineCommand::Ls => {
            let list = client.request("GET", "/v1/pipelines", None)?.ok()?;
            print_table(list["pipelines"].as_array().map_or(&[][..], Vec::as_slice));
        }
        PipelineCommand::Show { name } => {
            let reply = client.request("GET", &path(&name)?, None)?;
            let body = reply.body.clone();
            reply.ok()?;
            let doc: Ordered = serde_json::from_slice(&body)?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        PipelineCommand::Stop { name } => println!("{}", state_line(&act(&client, &name, "stop")?)),
        PipelineCommand::Start { name } => {
            println!("{}", state_line(&act(&client, &name, "start")?));
        }
        PipelineCommand::Pause { name } => {
            println!("{}", state_line(&act(&client, &name, "pause")?));
        }
        PipelineCommand::Resume { name } => {
            println!("{}", state_line(&act(&client, &name, "resume")?));
        }
        PipelineCommand::Swap { name, module, step } => {
            swap(&client, &name, &module, step.as_deref())?;
        }
        PipelineCommand::Rm { name } => {
            let doc = client.request("DELETE", &path(&name)?, None)?.ok()?;
            println!("deleted {}", text(&doc["name"]));
        }
    }
    Ok(())
}

/// JSON that keeps the order of its objects' keys (the server's, which
/// puts `name` and `status` first), for printing.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
enum Ordered {
    Object(indexmap::IndexMap<String, Ordered>),
    Array(Vec<Ordered>),
    Other(Value),
}

/// `/v1/pipelines/{name}`, once `name` is known to be a valid name (so
/// that it cannot change the path).
fn path(name: &str) -> anyhow::Result<String> {
    validate_name(name).map_err(|_| ManagerError::InvalidName(name.to_owned()))?;
    Ok(format!("/v1/pipelines/{name}"))
}

/// `POST /v1/pipelines/{name}/{action}`: the status afterwards.
fn act(client: &Client, name: &str, action: &str) -> anyhow::Result<Value> {
    let path = format!("{}/{action}", path(name)?);
    client.request("POST", &path, None)?.ok()
}

/// `orders: running`, or `orders: failed: <error>`.
fn state_line(doc: &Value) -> String {
    let mut line = format!("{}: {}", text(&doc["name"]), text(&doc["status"]));
    if let Some(error) = doc["error"].as_str() {
        line.push_str(": ");
        line.push_str(error);
    }
    line
}

/// The table of `sluice pipeline ls`, its columns as wide as their widest
/// cell.
fn print_table(pipelines: &[Value]) {
    if pipelines.is_empty() {
        println!("no pipelines");
        return;
    }
    let header = ["NAME", "STATUS", "MODULES", "INPUT ROWS", "ROWS/S", "LAG"];
    let rows: Vec<[String; 6]> = pipelines
        .iter()
        .map(|p| {
            let modules: Vec<String> = p["modules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    format!(
                        "{}={}@{}",
                        text(&m["step"]),
                        text(&m["module"]),
                        m["version"]
                    )
                })
                .collect();
            let progress = &p["progress"];
            [
                text(&p["name"]).to_owned(),
                text(&p["status"]).to_owned(),
                modules.join(","),
                number(&progress["totals"]["records_in"], 0),
                number(&progress["input_rows_per_second"], 1),
                number(&progress["lag"], 0),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: [&str; 6]| {
        let [name, status, modules, input, rate, lag] = cells;
        let [w0, w1, w2, w3, w4, w5] = widths;
        format!("{name:<w0$}  {status:<w1$}  {modules:<w2$}  {input:>w3$}  {rate:>w4$}  {lag:>w5$}")
    };
    println!("{}", line(header));
    for row in &rows {
        println!("{}", line(row.each_ref().map(String::as_str)));
    }
}

/// A number with `decimals` decimals, or `-` when there is none (yet).
fn number(v: &Value, decimals: usize) -> String {
    match v.as_f64() {
        Some(n) if decimals == 0 => format!("{}", n.round() as i64),
        Some(n) => format!("{n:.decimals$}"),
        None => "-".to_owned(),
    }
}

/// `POST /v1/pipelines/{name}/swap`, then prints its outcome:
/// `<state>: step <step>: <module>@<from> -> <module>@<to>`.
fn swap(client: &Client, name: &str, module: &str, step: Option<&str>) -> anyhow::Result<()> {
    let path = path(name)?;
    // What the step runs now, for the outcome line.
    let before = client.request("GET", &path, None)?.ok()?;
    let mut body = json!({ "module": module });
    if let Some(step) = step {
        body["step"] = json!(step);
    }
    let reply = client.request(
        "POST",
        &format!("{path}/swap"),
        Some(body.to_string().as_bytes()),
    )?;
    if reply.status == 422 {
        // A swap rolled back at the boundary has a record: show it before
        // the server's reason.
        let module_name = module.split('@').next().unwrap_or(module);
        if let Ok(after) = client.request("GET", &path, None).and_then(|r| r.ok())
            && let Some(record) = new_swaps(&before, &after)
                .rev()
                .find(|r| r["state"] == "rolled-back" && r["module"] == module_name)
        {
            println!("{}", outcome(name, &before, record));
        }
    }
    let doc = reply.ok()?;
    if doc["swap"].is_null() {
        // A pipeline that is not running runs the new module when it starts.
        let step = match step {
            Some(step) => step,
            None => text(&doc["modules"][0]["step"]),
        };
        let now = doc["modules"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["step"] == step)
            .unwrap_or(&Value::Null);
        let record = json!({
            "state": "recorded",
            "step": step,
            "module": now["module"],
            "from_version": step_module(&before, step).1,
            "to_version": now["version"],
        });
        println!("{}", outcome(name, &before, &record));
    } else {
        println!("{}", outcome(name, &before, &doc["swap"]));
    }
    Ok(())
}

/// The swap records of `after` that `before` did not have (the same run,
/// higher ids; or every record of a new run).
fn new_swaps<'a>(before: &Value, after: &'a Value) -> impl DoubleEndedIterator<Item = &'a Value> {
    let same_run = before["started_at"] == after["started_at"];
    let seen = before["swaps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_u64())
        .max()
        .filter(|_| same_run)
        .unwrap_or(0);
    after["swaps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |r| r["id"].as_u64().is_some_and(|id| id > seen))
}

/// The module and version step `step` of `doc` runs.
fn step_module<'a>(doc: &'a Value, step: &str) -> (&'a str, &'a Value) {
    let found = doc["modules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["step"] == step);
    found.map_or(("?", &Value::Null), |m| (text(&m["module"]), &m["version"]))
}

/// One line for a swap record (`before`: the status before the swap).
fn outcome(name: &str, before: &Value, record: &Value) -> String {
    let step = text(&record["step"]);
    let (from_module, _) = step_module(before, step);
    let version = |v: &Value| v.as_u64().map_or("?".to_owned(), |v| v.to_string());
    let state = text(&record["state"]);
    let line = format!(
        "{state}: step {step}: {from_module}@{} -> {}@{}",
        version(&record["from_version"]),
        text(&record["module"]),
        version(&record["to_version"]),
    );
    match state {
        "trial" => format!("{line} (on trial until its first batch with records)"),
        "pending" => format!(
            "{line} (still waiting for a batch boundary: see `sluice pipeline show {name}`)"
        ),
        "rolled-back" => format!("{line}: {}", text(&record["reason"])),
        "recorded" => format!("{line} (from the next start of pipeline `{name}`)"),
        _ => line,
    }
}
