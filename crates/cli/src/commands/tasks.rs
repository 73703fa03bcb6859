//! `ganglion tasks ls|show|cancel`

use std::io::Write;
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ganglion_api::{self as api, TaskStatus};
use serde::Serialize;

use super::invite::encode;
use super::{out, print_json};
use crate::cli::TasksCommand;
use crate::client::ApiClient;

/// The fields CONTRACT.md lists for `tasks ls --json`.
#[derive(Serialize)]
struct TaskOut<'a> {
    id: &'a str,
    node: &'a str,
    argv: &'a [String],
    status: TaskStatus,
    exit_code: Option<i32>,
    error: Option<&'a str>,
    created_at: &'a str,
    finished_at: Option<&'a str>,
}

impl<'a> From<&'a api::Task> for TaskOut<'a> {
    fn from(t: &'a api::Task) -> Self {
        TaskOut {
            id: &t.id,
            node: &t.node,
            argv: &t.argv,
            status: t.status,
            exit_code: t.exit_code,
            error: t.error.as_deref(),
            created_at: &t.created_at,
            finished_at: t.finished_at.as_deref(),
        }
    }
}

pub async fn run(cmd: TasksCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TasksCommand::Ls {
            node,
            status,
            json,
            hub,
        } => {
            let mut query = Vec::new();
            if let Some(n) = &node {
                query.push(format!("node={}", encode(n)));
            }
            if let Some(s) = &status {
                query.push(format!("status={}", encode(s)));
            }
            let path = format!("/api/v1/tasks?{}", query.join("&"));
            let tasks: Vec<api::Task> = ApiClient::locate(&hub)?.get(&path).await?;
            if json {
                print_json(&tasks.iter().map(TaskOut::from).collect::<Vec<_>>())?;
            } else {
                out(format!(
                    "{:<21} {:<12} {:<10} {:<5} {:<25} COMMAND",
                    "ID", "NODE", "STATUS", "EXIT", "CREATED"
                ));
                for t in &tasks {
                    let code = t
                        .exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into());
                    out(format!(
                        "{:<21} {:<12} {:<10} {:<5} {:<25} {}",
                        t.id,
                        t.node,
                        t.status.as_str(),
                        code,
                        t.created_at,
                        t.argv.join(" ")
                    ));
                }
            }
        }
        TasksCommand::Show { id, json, hub } => {
            let t: api::Task = ApiClient::locate(&hub)?
                .get(&format!("/api/v1/tasks/{}", encode(&id)))
                .await?;
            if json {
                print_json(&t)?;
            } else {
                show(&t)?;
            }
        }
        TasksCommand::Cancel { id, hub } => {
            let path = format!("/api/v1/tasks/{}/cancel", encode(&id));
            let t: api::Task = ApiClient::locate(&hub)?
                .post(&path, &serde_json::json!({}))
                .await?;
            out(format!("task {} is {}", t.id, t.status.as_str()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(t: &api::Task) -> anyhow::Result<()> {
    out(format!("task:     {}", t.id));
    out(format!("node:     {}", t.node));
    out(format!("command:  {}", t.argv.join(" ")));
    out(format!(
        "status:   {}{}",
        t.status.as_str(),
        t.exit_code
            .map(|c| format!(" (exit code {c})"))
            .unwrap_or_default()
    ));
    if let Some(e) = &t.error {
        out(format!("error:    {e}"));
    }
    out(format!("created:  {}", t.created_at));
    if let Some(f) = &t.finished_at {
        out(format!("finished: {f}"));
    }
    let trunc = if t.output_truncated {
        " (truncated)"
    } else {
        ""
    };
    out(format!("output:   {} bytes{trunc}", t.output_bytes));
    for h in &t.history {
        let note = h
            .note
            .as_deref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        out(format!("  {} {}{note}", h.at, h.status.as_str()));
    }
    let mut stdout = std::io::stdout().lock();
    for (name, b64) in [("stdout", &t.stdout_b64), ("stderr", &t.stderr_b64)] {
        let data = STANDARD.decode(b64.as_deref().unwrap_or_default())?;
        if !data.is_empty() {
            writeln!(stdout, "--- {name} ---")?;
            stdout.write_all(&data)?;
            if !data.ends_with(b"\n") {
                writeln!(stdout)?;
            }
        }
    }
    Ok(())
}
