//! Logs: `tracing` to stderr (stdout is for command output). `GANGLION_LOG`
//! sets the filter (default `info`); `GANGLION_LOG_FORMAT=json` writes JSON lines.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("GANGLION_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("GANGLION_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
