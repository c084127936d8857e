//! `sluice module push|ls|rm`: a small client of the control plane's modules
//! API (`sluice serve`), and the [`Client`] it uses (also used by
//! `sluice pipeline` and by tests), with the `--server`/`--token` options
//! every client command shares ([`ServerArgs`]).
//!
//! Plain HTTP only (the server listens on loopback, or behind a proxy that
//! terminates TLS). API errors come back as `Err` carrying the server's
//! message, which `sluice` prints as `error: <message>` and exits non-zero.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::registry::{ModuleRef, validate_name};

/// The options of every command that talks to a `sluice serve`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The `sluice serve` to talk to.
    #[arg(long, global = true, default_value = "http://127.0.0.1:7878")]
    server: String,
    /// File holding the bearer token for changes (only its owner may read
    /// it). Default: $SLUICE_TOKEN.
    #[arg(long, global = true, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Bearer token for changes. Visible to every user in `ps`: prefer
    /// $SLUICE_TOKEN or --token-file.
    #[arg(long, global = true, hide = true)]
    token: Option<String>,
}

impl ServerArgs {
    /// A client of the server, with the token of `--token-file`, else
    /// `$SLUICE_TOKEN`, else `--token` (an empty token is none).
    pub fn client(self) -> anyhow::Result<Client> {
        let token = match &self.token_file {
            Some(path) => Some(read_token_file(path)?),
            None => std::env::var("SLUICE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .or(self.token),
        }
        .filter(|t| !t.is_empty());
        Ok(Client::new(&self.server, token))
    }
}

/// The token in `path` (its first line, trimmed). Refuses a file that its
/// group or others may read or write, as ssh refuses such a key: the token
/// is what lets a caller upload code.
pub fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta =
        std::fs::metadata(path).with_context(|| format!("--token-file {shown}: cannot read it"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "--token-file {shown}: its mode {mode:o} lets other users read or change it; \
             run `chmod 600 {shown}`"
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--token-file {shown}: cannot read it"))?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.is_empty() {
        bail!("--token-file {shown}: the file is empty; write the token on its first line");
    }
    Ok(token)
}

/// `sluice module ...`.
#[derive(Debug, clap::Args)]
pub struct ModuleArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: ModuleCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModuleCommand {
    /// Upload a component as the next version of module NAME. The server
    /// checks it (a Sluice component whose init accepts the configuration)
    /// before storing it.
    Push {
        name: String,
        file: PathBuf,
        /// Configuration to try the module's init with (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
    /// List the modules, or the versions of one.
    Ls { name: Option<String> },
    /// Delete a module (every version: NAME) or one version (NAME@VERSION).
    /// Refused while a pipeline uses it.
    Rm { module: String },
}

/// Runs `sluice module ...`.
pub fn run(args: ModuleArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    match args.command {
        ModuleCommand::Push { name, file, config } => {
            validate_name(&name)?;
            let config = config
                .iter()
                .map(|pair| match pair.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                    _ => bail!("--config {pair}: expected KEY=VALUE"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let reply = client.push(&name, &bytes, &config)?;
            let created = reply.status == 201;
            let v = reply.ok()?;
            let what = if created {
                "stored"
            } else {
                "unchanged, identical to the latest version:"
            };
            println!(
                "{what} {name}@{} ({}, {}, sha256 {})",
                v["version"],
                text(&v["kind"]),
                size(&v["size"]),
                short(&v["sha256"])
            );
        }
        ModuleCommand::Ls { name: None } => print_modules(&client.list()?.ok()?),
        ModuleCommand::Ls { name: Some(name) } => {
            validate_name(&name)?;
            print_versions(&client.show(&name)?.ok()?);
        }
        ModuleCommand::Rm { module } => {
            let module: ModuleRef = module.parse()?;
            let v = client.remove(&module)?.ok()?;
            let versions: Vec<String> = v["deleted"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| format!("{}@{n}", module.name))
                .collect();
            println!("deleted {}", versions.join(", "));
        }
    }
    Ok(())
}

fn print_modules(v: &Value) {
    let modules = v["modules"].as_array().map_or(&[][..], Vec::as_slice);
    if modules.is_empty() {
        println!("no modules");
        return;
    }
    println!(
        "{:<24} {:>6} {:>8}  {:<9}  {:>10}  {:<16}  UPLOADED",
        "NAME", "LATEST", "VERSIONS", "KIND", "SIZE", "SHA256"
    );
    for m in modules {
        println!(
            "{:<24} {:>6} {:>8}  {:<9}  {:>10}  {:<16}  {}",
            text(&m["name"]),
            m["latest_version"].to_string(),
            m["versions"].to_string(),
            text(&m["kind"]),
            size(&m["size"]),
            short(&m["sha256"]),
            text(&m["uploaded_at"])
        );
    }
}

fn print_versions(v: &Value) {
    println!(
        "{:<32} {:<9}  {:>10}  {:<16}  {:<20}  USED BY",
        "MODULE", "KIND", "SIZE", "SHA256", "UPLOADED"
    );
    for version in v["versions"].as_array().into_iter().flatten() {
        let users: Vec<&str> = version["used_by"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<32} {:<9}  {:>10}  {:<16}  {:<20}  {}",
            format!("{}@{}", text(&v["name"]), version["version"]),
            text(&version["kind"]),
            size(&version["size"]),
            short(&version["sha256"]),
            text(&version["uploaded_at"]),
            if users.is_empty() {
                "-".to_owned()
            } else {
                users.join(", ")
            }
        );
    }
}

/// A JSON string, or `?`.
pub(super) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

fn short(v: &Value) -> &str {
    text(v).get(..16).unwrap_or(text(v))
}

fn size(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "?".into(), |n| bytesize::ByteSize(n).to_string())
}

/// An answer of the API: its status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "the server answered {} with something that is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as JSON if the request succeeded; else the API's message.
    pub fn ok(self) -> anyhow::Result<Value> {
        if self.status < 400 {
            return self.json();
        }
        match self
            .json()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
        {
            Some(message) => bail!("{message}"),
            None => bail!(
                "the server answered {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ),
        }
    }
}

/// A blocking client of the modules API.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    server: String,
    token: Option<String>,
}

impl Client {
    /// `server` like `http://127.0.0.1:7878`; `token` is sent as a bearer token.
    pub fn new(server: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Self {
            agent,
            server: server.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// `POST /v1/modules/{name}?config.<key>=<value>...` with the component.
    /// It asks for `100-continue`, so a refusal (401, 413) comes before the
    /// bytes are sent.
    pub fn push(
        &self,
        name: &str,
        bytes: &[u8],
        config: &[(String, String)],
    ) -> anyhow::Result<Reply> {
        let mut request = self
            .agent
            .post(format!("{}/v1/modules/{name}", self.server))
            .header("expect", "100-continue")
            .content_type("application/wasm");
        for (key, value) in config {
            request = request.query(format!("config.{key}"), value);
        }
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        self.reply(request.send(bytes))
    }

    /// `GET /v1/modules`.
    pub fn list(&self) -> anyhow::Result<Reply> {
        self.request("GET", "/v1/modules", None)
    }

    /// `GET /v1/modules/{name}`.
    pub fn show(&self, name: &str) -> anyhow::Result<Reply> {
        self.request("GET", &format!("/v1/modules/{name}"), None)
    }

    /// `DELETE /v1/modules/{name}[/{version}]`.
    pub fn remove(&self, module: &ModuleRef) -> anyhow::Result<Reply> {
        let path = match module.version {
            Some(version) => format!("/v1/modules/{}/{version}", module.name),
            None => format!("/v1/modules/{}", module.name),
        };
        self.request("DELETE", &path, None)
    }

    /// Any request; `path` includes the query, already encoded. A body is
    /// sent with the content type its route takes (a spec as YAML).
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<Reply> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.server));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let route_type = ureq::http::Method::from_bytes(method.as_bytes())
            .ok()
            .and_then(|m| crate::api::guard::content_type_for(&m, path));
        if let (Some(_), Some(content_type)) = (body, route_type) {
            request = request.header("content-type", content_type);
        }
        let sent = match body {
            Some(body) => self.agent.run(request.body(body)?),
            None => self.agent.run(request.body(())?),
        };
        self.reply(sent)
    }

    fn reply(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Reply> {
        let mut response = sent.with_context(|| {
            format!(
                "cannot reach the Sluice server at {} (is `sluice serve` running?)",
                self.server
            )
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .with_context(|| format!("cannot read the answer of {}", self.server))?;
        Ok(Reply { status, body })
    }
}
