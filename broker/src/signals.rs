//! SIGTERM/SIGINT handling without a signal handler: the main thread
//! blocks both before any shard thread exists (threads inherit the mask),
//! then collects them synchronously with `sigtimedwait`. No shard is ever
//! interrupted by a signal, and no async-signal-safety concerns arise.

use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

/// The blocked set; see the module doc.
#[derive(Debug)]
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGTERM and SIGINT on the calling thread. Call before
    /// spawning threads.
    pub fn block() -> io::Result<Signals> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; we pass a
        // valid pointer to uninitialised storage of the right type.
        if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sigemptyset succeeded, so the set is initialised.
        let mut set = unsafe { set.assume_init() };
        for signal in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: `set` is an initialised sigset_t and the signals are valid.
            if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is initialised; the old mask is not requested.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Signals { set })
    }

    /// Waits up to `timeout` for SIGTERM or SIGINT; returns its name.
    pub fn wait(&self, timeout: Duration) -> io::Result<Option<&'static str>> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: `self.set` is an initialised sigset_t, `timeout` a valid
        // timespec; the siginfo out-pointer may be null.
        let rc = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &timeout) };
        match rc {
            libc::SIGTERM => Ok(Some("SIGTERM")),
            libc::SIGINT => Ok(Some("SIGINT")),
            -1 => {
                let error = io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                    _ => Err(error),
                }
            }
            _ => Ok(None),
        }
    }
}
