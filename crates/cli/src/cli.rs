//! Command-line arguments. Every flag that takes a value also reads
//! `GANGLION_<FLAG>` from the environment; hub flags may also come from the
//! TOML file given by `--config` (flag > env > file > default).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "ganglion",
    version,
    about = "Run autonomous agents across a team's machines from one hub"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the hub
    Hub(HubArgs),
    /// Run a hub and one node named `local` in one process
    Up(UpArgs),
    /// Join a hub, or run a joined node
    #[command(subcommand)]
    Node(NodeCommand),
    /// Create, list and revoke invites
    #[command(subcommand)]
    Invite(InviteCommand),
    /// List nodes, change their policy, revoke them
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Run a program on a node and stream its output
    Run(RunArgs),
    /// List, show and cancel tasks
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Inspect node mirrors at the hub
    #[command(subcommand)]
    Mirror(MirrorCommand),
    /// Benchmarks against a real hub
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Hub settings, shared by `hub` and `up`.
#[derive(Args, Debug, Clone, Default)]
pub struct HubFlags {
    /// Data directory [default: ./ganglion-data]
    #[arg(long, env = "GANGLION_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address for nodes [default: 127.0.0.1:7443]
    #[arg(long, env = "GANGLION_GRPC_ADDR")]
    pub grpc_addr: Option<String>,
    /// HTTP listen address for the API and dashboard [default: 127.0.0.1:7080]
    #[arg(long, env = "GANGLION_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// gRPC address put into invites [default: the bound gRPC address]
    #[arg(long, env = "GANGLION_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// TLS certificate (PEM) to serve instead of the self-signed one
    #[arg(long, env = "GANGLION_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for --tls-cert
    #[arg(long, env = "GANGLION_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Interval between node heartbeats [default: 5s]
    #[arg(long, env = "GANGLION_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<String>,
    /// Heartbeats a node may miss before it is marked offline [default: 3]
    #[arg(long, env = "GANGLION_MISSED_HEARTBEATS")]
    pub missed_heartbeats: Option<u32>,
    /// How long a TLS handshake or a first HTTP request may take [default: 10s]
    #[arg(long, env = "GANGLION_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<String>,
    /// How long a node has to send its hello on a new control stream [default: 10s]
    #[arg(long, env = "GANGLION_HELLO_DEADLINE")]
    pub hello_deadline: Option<String>,
    /// How long a node's credential check may take [default: 2s]
    #[arg(long, env = "GANGLION_AUTH_DEADLINE")]
    pub auth_deadline: Option<String>,
    /// Failed handshakes an address may make in a burst before it is limited [default: 20]
    #[arg(long, env = "GANGLION_AUTH_FAILURE_BURST")]
    pub auth_failure_burst: Option<u32>,
    /// Failed handshakes per second a limited address regains [default: 2]
    #[arg(long, env = "GANGLION_AUTH_FAILURE_REFILL")]
    pub auth_failure_refill: Option<f64>,
    /// How often the hub looks for tasks whose node went silent [default: 5s]
    #[arg(long, env = "GANGLION_TASK_LEASE_PERIOD")]
    pub task_lease_period: Option<String>,
    /// How often idle mirror transfers are dropped [default: 10s]
    #[arg(long, env = "GANGLION_TRANSFER_REAPER_PERIOD")]
    pub transfer_reaper_period: Option<String>,
    /// How often mirrors of removed nodes are trashed, and old trash deleted [default: 10m]
    #[arg(long, env = "GANGLION_ORPHAN_PURGE_PERIOD")]
    pub orphan_purge_period: Option<String>,
    /// How long a trashed mirror is kept [default: 1day]
    #[arg(long, env = "GANGLION_ORPHAN_GRACE")]
    pub orphan_grace: Option<String>,
    /// TOML configuration file
    #[arg(long, env = "GANGLION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration and exit
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Args, Debug)]
pub struct HubArgs {
    #[command(flatten)]
    pub hub: HubFlags,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub hub: HubFlags,
    /// Workspace of the `local` node [default: the current directory]
    #[arg(long, env = "GANGLION_WORKSPACE")]
    pub workspace: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Redeem an invite, store the credential, then run the node
    Join(JoinArgs),
    /// Run an already joined node
    Start(StartArgs),
    /// Forget the workspace's mirror index, so that the next start restores
    /// the workspace from the hub (after a disk was replaced; the node must
    /// not be running). Local files are kept: what differs becomes a conflict
    Restore(StartArgs),
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The invite string from `ganglion invite create`
    pub invite: String,
    /// The directory this node shares with the hub
    #[arg(long, env = "GANGLION_WORKSPACE")]
    pub workspace: PathBuf,
    /// The node's name [default: the invite's name, else the host name]
    #[arg(long, env = "GANGLION_NODE_NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub node: NodeFlags,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    pub node: NodeFlags,
}

/// Node settings, shared by `node join` and `node start` (layered like the
/// hub's: flag > environment > `--config` file > default).
#[derive(Args, Debug, Clone, Default)]
pub struct NodeFlags {
    /// Where the node keeps its credential and index [default: ./ganglion-node]
    #[arg(long, env = "GANGLION_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// How long tasks keep running while the node cannot report them [default: 1m]
    #[arg(long, env = "GANGLION_REPORT_GRACE")]
    pub report_grace: Option<String>,
    /// The first wait before reconnecting to the hub [default: 50ms]
    #[arg(long, env = "GANGLION_RECONNECT_DELAY")]
    pub reconnect_delay: Option<String>,
    /// The longest wait between reconnection attempts [default: 30s]
    #[arg(long, env = "GANGLION_RECONNECT_DELAY_MAX")]
    pub reconnect_delay_max: Option<String>,
    /// TOML configuration file
    #[arg(long, env = "GANGLION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration and exit
    #[arg(long)]
    pub print_config: bool,
}

/// How operator commands find the hub.
#[derive(Args, Debug, Clone, Default)]
pub struct HubLocator {
    /// The hub's HTTP base URL, e.g. http://127.0.0.1:7080
    #[arg(long = "hub", env = "GANGLION_HUB_URL", global = true)]
    pub hub_url: Option<String>,
    /// The admin token
    #[arg(
        long,
        env = "GANGLION_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// The hub's data dir on this machine (reads its endpoints and admin token)
    #[arg(long, env = "GANGLION_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum InviteCommand {
    /// Create a single-use invite
    Create {
        /// Only a node of this name may redeem it
        #[arg(long)]
        name: Option<String>,
        /// How long the invite stays valid, e.g. 10m, 2h [default: 1h]
        #[arg(long)]
        ttl: Option<String>,
        /// The policy of the node it creates [default: strict]
        #[arg(long, value_enum)]
        policy: Option<PolicyArg>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// List invites
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// Revoke an unused invite
    Revoke {
        id: String,
        #[command(flatten)]
        hub: HubLocator,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyArg {
    Strict,
    Permissive,
}

impl From<PolicyArg> for ganglion_core::PolicyMode {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Strict => ganglion_core::PolicyMode::Strict,
            PolicyArg::Permissive => ganglion_core::PolicyMode::Permissive,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// List nodes
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// Set a node's policy; takes effect on the live node without a restart
    Policy {
        node: String,
        #[arg(value_enum)]
        mode: PolicyArg,
        /// Programs to allow on top of the strict default, comma-separated.
        /// Only these files (and their dynamic loader) can be executed by a
        /// task, whatever a program is told to run. Allowing an interpreter
        /// (python3, perl, node, ruby…) or a program that runs code or
        /// commands it is given (git, make, find -exec, xargs, env) opens all
        /// that it can do: a full interpreter runs any code, it does not need
        /// a shell. A script's interpreter is allowed with the script.
        #[arg(long, value_delimiter = ',', verbatim_doc_comment)]
        allow: Vec<String>,
        /// Allow TCP bind/connect (strict only)
        #[arg(long)]
        network: bool,
        /// Allow shells that are on the allowlist (strict only)
        #[arg(long)]
        allow_shell: bool,
        /// Run tasks even where the kernel cannot confine writes (strict only)
        #[arg(long)]
        allow_weak_sandbox: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// Close a node's stream now and refuse it from then on
    Revoke {
        node: String,
        #[command(flatten)]
        hub: HubLocator,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Join and connect N simulated nodes to a real hub process; report join
    /// latency and the hub's memory per idle node
    Nodes(BenchNodesArgs),
    /// Round trip of `true` through hub → node → hub, and task throughput
    /// over N in-process nodes (real node runtimes with the sandbox)
    Tasks(BenchTasksArgs),
}

#[derive(Args, Debug)]
pub struct BenchTasksArgs {
    /// Nodes to spread the throughput tasks over
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Tasks for the throughput figure (0: skip it)
    #[arg(long, default_value_t = 5000)]
    pub tasks: usize,
    /// Tasks in flight during the throughput run
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Sequential round trips timed on one node
    #[arg(long, default_value_t = 300)]
    pub roundtrips: usize,
    /// Untimed round trips first
    #[arg(long, default_value_t = 30)]
    pub warmup: usize,
    /// Simulated nodes: each task is reported started and exited 0 without
    /// running anything, so the figures are the hub's and its journal's
    #[arg(long)]
    pub simulated: bool,
}

#[derive(Args, Debug)]
pub struct BenchNodesArgs {
    /// Connected idle nodes to measure memory at (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub counts: Vec<usize>,
    /// Joins to time for the latency figures
    #[arg(long, default_value_t = 1000)]
    pub joins: usize,
    /// Concurrent joins in flight
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The node to run on
    #[arg(long)]
    pub node: String,
    /// Wall-clock limit, e.g. 30s, 10m [default: 1h]
    #[arg(long)]
    pub timeout: Option<String>,
    /// Working directory, relative to the node's workspace
    #[arg(long)]
    pub cwd: Option<String>,
    /// Extra environment variables, NAME=VALUE (repeatable)
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Bytes of output the node forwards before dropping the rest [default: 16 MiB]
    #[arg(long)]
    pub output_cap: Option<u64>,
    /// The program and its arguments
    #[arg(last = true, required = true, num_args = 1..)]
    pub argv: Vec<String>,
    #[command(flatten)]
    pub hub: HubLocator,
}

#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// List tasks, newest first
    Ls {
        #[arg(long)]
        node: Option<String>,
        /// pending, running, succeeded, failed or cancelled
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// Show one task with its stored output and history
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// Cancel a running task and wait until its process group is gone
    Cancel {
        id: String,
        #[command(flatten)]
        hub: HubLocator,
    },
}

#[derive(Subcommand, Debug)]
pub enum MirrorCommand {
    /// List a node's mirrored paths (below PATH)
    Ls {
        node: String,
        path: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// Print a mirrored file to stdout
    Cat {
        node: String,
        path: String,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// Files, bytes, pending changes, transfers in flight, last sync
    Status {
        node: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// Wait until the node is online and its mirror in sync (nothing pending
    /// or in flight); print its status; exit 1 at the timeout
    Wait {
        node: String,
        /// Also wait for the mirror to hold exactly this many files
        #[arg(long)]
        files: Option<u64>,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// Re-hash the mirror against its index; exit 1 listing every mismatch
    Verify {
        node: String,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// Write stdin (or --file LOCAL) to PATH in the node's mirror; the change
    /// reaches the node's workspace (queued while the node is offline)
    Put {
        node: String,
        path: String,
        /// Read the content from this local file instead of stdin
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Make the file executable
        #[arg(long)]
        executable: bool,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Delete PATH (a directory with everything below it) in the node's mirror
    Rm {
        node: String,
        path: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Rename FROM to TO (which must be free) in the node's mirror
    Mv {
        node: String,
        from: String,
        to: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List open conflicts (both versions kept, the losing one as a copy)
    Conflicts {
        node: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// End a conflict: keep the current version (the copy is deleted) or the
    /// conflict copy's (moved back to the path)
    Resolve {
        node: String,
        /// The conflict copy's path, or the path in conflict if it has one
        path: String,
        #[arg(long, value_enum)]
        keep: KeepArg,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
    /// Manage hub-owned (immutable) paths: node-side changes under them are not applied
    Immutable {
        node: String,
        #[arg(value_enum)]
        action: ImmutableAction,
        /// A gitignore-style glob (for add and rm)
        pattern: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubLocator,
    },
}

/// What every hub-side write takes.
#[derive(Args, Debug)]
pub struct WriteArgs {
    /// Write only if the mirror's current hash of the path is this
    /// (`blake3:…`); exit 1 and change nothing otherwise
    #[arg(long)]
    pub if_hash: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub hub: HubLocator,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepArg {
    Current,
    Conflict,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImmutableAction {
    Add,
    Rm,
    Ls,
}
