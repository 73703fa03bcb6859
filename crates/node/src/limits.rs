//! Process limits the node (and the hub, through the same binary) adjusts at start.

/// Raises the soft limit on open files to the hard limit: a hub holds one
/// descriptor per node, and the usual soft limit (1024) is far too low.
#[allow(unsafe_code)]
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
