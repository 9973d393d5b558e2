//! The few libc calls the testkit needs, each wrapped so that the `unsafe`
//! stays small and local.

use std::ffi::CString;
use std::mem::MaybeUninit;

pub(crate) fn euid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// (uid, gid) of a local account.
pub(crate) fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut pwd = MaybeUninit::<libc::passwd>::zeroed();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid and writable for the call, and `buf.len()`
    // is the real size of `buf`; the reentrant variant is used because tests
    // start servers from many threads at once.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            pwd.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: a non-null `result` means getpwnam_r filled in `pwd`.
    let pwd = unsafe { pwd.assume_init() };
    Some((pwd.pw_uid, pwd.pw_gid))
}

/// Sends `sig` to one process; false if it does not exist (any more).
pub(crate) fn signal_pid(pid: u32, sig: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions; pid > 0 keeps it from
    // ever meaning "our own group" or "every process".
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Sends `sig` to every process of group `pgid`.
pub(crate) fn signal_group(pgid: u32, sig: libc::c_int) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: killpg has no memory-safety preconditions; pgid > 1 keeps it
    // from ever meaning our own group.
    unsafe { libc::killpg(pgid, sig) == 0 }
}

/// Reaps child `pid` if it has exited. True once it is gone for good (reaped
/// now, or not our child at all).
pub(crate) fn try_reap(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    rc != 0
}

pub(crate) fn register_atexit(hook: extern "C" fn()) {
    // SAFETY: `hook` is a plain function that lives for the whole program.
    unsafe {
        libc::atexit(hook);
    }
}

/// Removes the System V segment PostgreSQL left behind when it was killed
/// without a chance to clean up, but only if it is still the same segment
/// (`key` matches) and nobody is attached to it any more.
pub(crate) fn remove_unattached_shm(shmid: i32, key: i64) {
    let mut ds = MaybeUninit::<libc::shmid_ds>::zeroed();
    // SAFETY: `ds` is a valid, writable shmid_ds for IPC_STAT to fill.
    if unsafe { libc::shmctl(shmid, libc::IPC_STAT, ds.as_mut_ptr()) } != 0 {
        return;
    }
    // SAFETY: IPC_STAT succeeded, so `ds` is initialised.
    let ds = unsafe { ds.assume_init() };
    if i64::from(ds.shm_perm.__key) == key && ds.shm_nattch == 0 {
        // SAFETY: IPC_RMID takes no buffer; null is the documented argument.
        unsafe {
            libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}
