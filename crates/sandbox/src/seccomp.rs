//! The seccomp filters of a STRICT task, compiled (with rust-vmm's
//! `seccompiler`) in the parent before the fork; the child only hands the
//! ready BPF programs to the kernel.
//!
//! What they deny (EPERM unless said otherwise):
//! - set-id files: `chmod`/`fchmod`/`fchmodat`/`fchmodat2`, `open`/`openat`/
//!   `creat` (with `O_CREAT`), `mkdir`/`mkdirat`, `mknod`/`mknodat` with
//!   `S_ISUID` or `S_ISGID` in the mode (as systemd's `RestrictSUIDSGID=`);
//!   `openat2`, whose mode the filter cannot see, fails with ENOSYS (libc
//!   falls back to `openat`);
//! - sockets: without `network`, every `socket()` (`socketpair` stays);
//!   with it, every family but `AF_UNIX`, `AF_INET`, `AF_INET6`;
//! - namespaces and mounts: `unshare`/`clone` with a namespace flag, `setns`,
//!   `clone3` (ENOSYS, so libc falls back to `clone`, whose flags are
//!   checked), the mount API, `pivot_root`, `chroot`;
//! - x32 system calls (ENOSYS), which an x86_64 filter would not see;
//! - kernel attack surface: `ptrace`, `process_vm_readv/writev`, `bpf`,
//!   `perf_event_open`, the keyring, `userfaultfd`, `io_uring_*`, `kexec_*`,
//!   module loading, and `personality` with `READ_IMPLIES_EXEC`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::Error;

const SET_ID: [u64; 2] = [libc::S_ISUID as u64, libc::S_ISGID as u64];

/// Namespace flags of `unshare` (all) and `clone` (all but `CLONE_NEWTIME`,
/// whose bit is part of the exit signal there).
const NS_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];
const CLONE_NEWTIME: u64 = 0x80;
const READ_IMPLIES_EXEC: u64 = 0x0040_0000;

/// Syscalls denied whatever their arguments.
const DENIED: &[libc::c_long] = &[
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
];

/// The compiled filters, installed in order by the child.
#[derive(Clone, Debug)]
pub(crate) struct Filters {
    pub programs: Vec<BpfProgram>,
}

/// Builds the filters of a STRICT task (`network`: the policy allows it).
pub(crate) fn filters(network: bool) -> Result<Filters, Error> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(setup)?;
    let eperm = compile(deny_eperm(network)?, libc::EPERM, arch)?;
    let enosys = compile(
        BTreeMap::from([(libc::SYS_clone3, vec![]), (libc::SYS_openat2, vec![])]),
        libc::ENOSYS,
        arch,
    )?;
    let mut programs = vec![eperm, enosys];
    #[cfg(target_arch = "x86_64")]
    programs.push(no_x32());
    Ok(Filters { programs })
}

/// x32 system calls (number with bit 30 set) pass the architecture check of
/// an x86_64 filter and would bypass its rules where the kernel has x32:
/// ENOSYS for all of them. Four instructions by hand, since seccompiler
/// matches syscall numbers, not ranges.
#[cfg(target_arch = "x86_64")]
fn no_x32() -> BpfProgram {
    use seccompiler::sock_filter;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let (ld, jeq, jge, ret) = (
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
        libc::BPF_RET | libc::BPF_K,
    );
    vec![
        // seccomp_data: nr at offset 0, arch at offset 4.
        stmt(ld, 4),
        jump(jeq, AUDIT_ARCH_X86_64, 0, 3),
        stmt(ld, 0),
        jump(jge, X32_SYSCALL_BIT, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ]
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
    arch: TargetArch,
) -> Result<BpfProgram, Error> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(setup)?;
    BpfProgram::try_from(filter).map_err(setup)
}

fn setup(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Setup {
        what: "seccomp filter",
        source: std::io::Error::other(e),
    }
}

/// One rule: `(args[arg] & bit) == bit`.
fn has_bit(arg: u8, bit: u64) -> Result<SeccompRule, Error> {
    let cond = SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(bit),
        bit,
    )
    .map_err(setup)?;
    SeccompRule::new(vec![cond]).map_err(setup)
}

/// Rules matching any of `bits` set in argument `arg`.
fn any_bit(arg: u8, bits: &[u64]) -> Result<Vec<SeccompRule>, Error> {
    bits.iter().map(|&b| has_bit(arg, b)).collect()
}

/// Rules matching a set-id bit in `mode_arg` when `flags_arg` creates a file.
fn creating(flags_arg: u8, mode_arg: u8) -> Result<Vec<SeccompRule>, Error> {
    const O_TMPFILE_BIT: u64 = (libc::O_TMPFILE & !libc::O_DIRECTORY) as u64;
    let mut rules = Vec::new();
    for create in [libc::O_CREAT as u64, O_TMPFILE_BIT] {
        for bit in SET_ID {
            let c = |arg, b: u64| {
                SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(b), b)
                    .map_err(setup)
            };
            let conds = vec![c(flags_arg, create)?, c(mode_arg, bit)?];
            rules.push(SeccompRule::new(conds).map_err(setup)?);
        }
    }
    Ok(rules)
}

fn deny_eperm(network: bool) -> Result<BTreeMap<i64, Vec<SeccompRule>>, Error> {
    let mut m: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // Set-id bits in a mode argument.
    let modes: &[(libc::c_long, u8)] = &[
        (libc::SYS_fchmod, 1),
        (libc::SYS_fchmodat, 2),
        (libc::SYS_fchmodat2, 2),
        (libc::SYS_mkdirat, 2),
        (libc::SYS_mknodat, 2),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_chmod, 1),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_creat, 1),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_mkdir, 1),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_mknod, 1),
    ];
    for &(nr, arg) in modes {
        m.insert(nr, any_bit(arg, &SET_ID)?);
    }
    // `open`/`openat` only create with O_CREAT or O_TMPFILE; without them the
    // mode is not looked at (and may hold anything).
    m.insert(libc::SYS_openat, creating(1, 3)?);
    #[cfg(target_arch = "x86_64")]
    m.insert(libc::SYS_open, creating(0, 2)?);
    let ns_all = [&NS_FLAGS[..], &[CLONE_NEWTIME]].concat();
    m.insert(libc::SYS_unshare, any_bit(0, &ns_all)?);
    m.insert(libc::SYS_clone, any_bit(0, &NS_FLAGS)?);
    m.insert(libc::SYS_personality, any_bit(0, &[READ_IMPLIES_EXEC])?);
    for &nr in DENIED {
        m.insert(nr, vec![]);
    }
    m.insert(libc::SYS_socket, socket_rules(network)?);
    Ok(m)
}

/// `socket(domain, ...)`: all denied without `network`; with it, every
/// family but `AF_UNIX`, `AF_INET` and `AF_INET6`.
fn socket_rules(network: bool) -> Result<Vec<SeccompRule>, Error> {
    if !network {
        return Ok(vec![]);
    }
    let allowed = [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];
    let conds = allowed
        .iter()
        .map(|&f| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, f as u64)
                .map_err(setup)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![SeccompRule::new(conds).map_err(setup)?])
}

/// Whether this kernel and architecture take seccomp filters.
pub(crate) fn supported() -> bool {
    TargetArch::try_from(std::env::consts::ARCH).is_ok()
        && crate::sys::prctl(libc::PR_GET_SECCOMP, 0) >= 0
}
