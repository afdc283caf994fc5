/*!
What the process does to itself before it holds a secret: no core dumps, and no same-user
debugger. A core file would hold the master key, the S3 secret and database passwords in clear
(where `kernel.core_pattern` puts it: a file next to the process, or systemd-coredump's store);
`PR_SET_DUMPABLE 0` also makes `/proc/<pid>/{environ,mem,fd}` readable by root only and stops
`ptrace` by other processes of the same user. `RLIMIT_CORE 0` (soft and hard) covers
`fs.suid_dumpable = 2` and the children, which inherit it across `exec` (pg_dump holds the
database password); the dumpable flag itself is reset by `exec`, so children are not hampered.
*/

/// Makes this process non-dumpable and its core size limit 0, for it and its children. Best
/// effort: both calls only fail on kernels without them, and nothing else depends on them.
pub fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit and prctl with constant, valid arguments; they touch no memory of ours
    // but the struct passed by reference.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    /// In a child process (the test runner must stay dumpable for its own sake): the flag and
    /// the limit as the process itself sees them.
    #[test]
    fn the_process_is_not_dumpable_and_has_no_core_limit() {
        // SAFETY: fork in a test; the child only calls async-signal-safe functions and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            super::no_core_dumps();
            let mut r = libc::rlimit {
                rlim_cur: 1,
                rlim_max: 1,
            };
            // SAFETY: as above.
            let ok = unsafe {
                libc::getrlimit(libc::RLIMIT_CORE, &mut r) == 0
                    && r.rlim_cur == 0
                    && r.rlim_max == 0
                    && libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 0
            };
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
