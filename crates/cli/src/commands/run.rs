//! `ganglion run`: run a program on a node, stream its output, exit with its code.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use ganglion_api::{self as api, OutputStream, TaskEventLine, TaskStatus};
use ganglion_core::limit::{MAX_COMMAND_BYTES, command_bytes};

use super::Failure;
use crate::cli::RunArgs;
use crate::client::ApiClient;

pub async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let env = a
        .env
        .iter()
        .map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .context("--env takes NAME=VALUE")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Refused here before anything is sent: the hub refuses more anyway.
    let size = command_bytes(
        a.argv.iter().map(String::as_str),
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if size > MAX_COMMAND_BYTES {
        bail!("the command line is {size} bytes; at most {MAX_COMMAND_BYTES} are accepted");
    }
    let body = api::RunTask {
        node: a.node.clone(),
        argv: a.argv,
        cwd: a.cwd,
        env,
        timeout: a.timeout,
        output_cap: a.output_cap,
    };
    let client = ApiClient::locate(&a.hub)?;
    let resp = client.post_stream("/api/v1/tasks", &body).await?;
    let interrupt = crate::signal::shutdown_token()?;
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut task_id: Option<String> = None;
    let mut cancel_sent = false;
    loop {
        let chunk = tokio::select! {
            c = stream.next() => c,
            _ = interrupt.cancelled(), if !cancel_sent && task_id.is_some() => {
                cancel_sent = true;
                let id = task_id.clone().unwrap_or_default();
                tracing::warn!(task = %id, "interrupted: cancelling the remote task");
                let client = ApiClient::locate(&a.hub)?;
                tokio::spawn(async move {
                    let _: anyhow::Result<api::Task> = client.post(&format!("/api/v1/tasks/{id}/cancel"), &serde_json::json!({})).await;
                });
                continue;
            }
        };
        let Some(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk.context("reading the task's output from the hub")?);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let event: TaskEventLine =
                serde_json::from_slice(&line).context("a malformed event from the hub")?;
            match event {
                TaskEventLine::Created { id } => {
                    tracing::debug!(task = %id, "task created");
                    task_id = Some(id);
                }
                TaskEventLine::Started { pid } => tracing::debug!(pid, "task started"),
                TaskEventLine::Output {
                    stream,
                    data_b64,
                    skipped,
                    ..
                } => write_output(task_id.as_deref(), stream, &data_b64, skipped)?,
                TaskEventLine::Finished { task } => return finished(&task),
            }
        }
    }
    let id = task_id.unwrap_or_else(|| "?".into());
    bail!("lost contact with the hub before task {id} finished; see `ganglion tasks show {id}`")
}

/// One output chunk to our stdout or stderr; a warning first when this
/// watcher missed chunks (the hub keeps them: `tasks show` prints them).
fn write_output(
    task_id: Option<&str>,
    stream: OutputStream,
    data_b64: &str,
    skipped: u64,
) -> anyhow::Result<()> {
    if skipped > 0 {
        let id = task_id.unwrap_or("?");
        tracing::warn!(
            task = %id,
            skipped,
            "output was read slower than the task wrote it: {skipped} chunks were skipped here; `ganglion tasks show {id}` prints the stored output"
        );
    }
    let data = STANDARD
        .decode(data_b64)
        .context("malformed output from the hub")?;
    if stream == OutputStream::Stderr {
        let mut e = std::io::stderr().lock();
        e.write_all(&data)?;
        e.flush()?;
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(&data)?;
        o.flush()?;
    }
    Ok(())
}

/// The remote exit code as ours ([`api::run_exit_code`]); the reason on
/// stderr when it did not succeed.
fn finished(task: &api::Task) -> anyhow::Result<ExitCode> {
    if task.status == TaskStatus::Succeeded {
        return Ok(ExitCode::SUCCESS);
    }
    if task.output_truncated {
        tracing::warn!(task = %task.id, "output was truncated at the output cap");
    }
    let code = api::run_exit_code(task.status, task.exit_code);
    match &task.error {
        Some(reason) => Err(Failure::error(code, reason.clone())),
        // A plain non-zero exit: the program already said what it had to.
        None => Ok(ExitCode::from(code)),
    }
}
