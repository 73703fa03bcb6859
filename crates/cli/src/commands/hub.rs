//! `ganglion hub`

use std::process::ExitCode;

use anyhow::Context;
use ganglion_hub::Hub;

use crate::cli::HubArgs;
use crate::config;

pub async fn run(args: HubArgs) -> anyhow::Result<ExitCode> {
    let options = config::hub_options(&args.hub)?;
    if args.hub.print_config {
        super::out(config::print(&options).trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    // A hub holds a descriptor per node and per connection: the usual soft
    // limit (1024) is far too low.
    ganglion_node::limits::raise_nofile();
    crate::hub_without_huge_pages();
    let cancel = crate::signal::shutdown_token()?;
    let hub = Hub::build(options).await.context("starting the hub")?;
    hub.run(cancel).await.context("running the hub")?;
    Ok(ExitCode::SUCCESS)
}
