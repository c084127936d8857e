//! `GET /metrics`: Prometheus text exposition format (version 0.0.4).
//!
//! - `sluice_modules`: stored module versions.
//! - `sluice_pipeline_up{pipeline}`: 1 while the pipeline runs, else 0.
//! - `sluice_pipeline_module_version{pipeline,step,module,version}`: 1 per step.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use super::manager::Status;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&state))
}

/// The exposition text.
pub fn render(state: &AppState) -> String {
    let mut out = String::new();
    let versions: usize = state.store.list().iter().map(|(_, v)| v.len()).sum();
    family(&mut out, "sluice_modules", "Stored module versions.");
    let _ = writeln!(out, "sluice_modules {versions}");
    let pipelines = state
        .pipelines
        .as_ref()
        .map(|m| m.list())
        .unwrap_or_default();
    family(
        &mut out,
        "sluice_pipeline_up",
        "1 while the pipeline runs, 0 when stopped or failed.",
    );
    for p in &pipelines {
        let up = u8::from(p.status == Status::Running);
        let _ = writeln!(
            out,
            "sluice_pipeline_up{{pipeline=\"{}\"}} {up}",
            escape(&p.name)
        );
    }
    family(
        &mut out,
        "sluice_pipeline_module_version",
        "The module version each step of a pipeline runs.",
    );
    for p in &pipelines {
        for m in &p.modules {
            let _ = writeln!(
                out,
                "sluice_pipeline_module_version{{pipeline=\"{}\",step=\"{}\",module=\"{}\",version=\"{}\"}} 1",
                escape(&p.name),
                escape(&m.step),
                escape(&m.module),
                m.version
            );
        }
    }
    out
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
