//! What this machine reports to the hub at the handshake.

use ganglion_core::Capabilities;

/// Probes the machine once: OS, kernel, cores, memory and the sandbox
/// protections its kernel enforces.
pub fn probe() -> Capabilities {
    let support = ganglion_sandbox::probe();
    Capabilities {
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        landlock_abi: support.landlock_abi,
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes: total_memory().unwrap_or(0),
        version: env!("CARGO_PKG_VERSION").into(),
        protections: support.protections(),
    }
}

fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
