//! Real-time scheduling (`SCHED_FIFO`) for the threads on the kill path:
//! the drain and the gateway ([`DrainConfig::realtime`](crate::drain::DrainConfig::realtime),
//! [`GatewayConfig::realtime`](crate::gateway::GatewayConfig::realtime)).
//!
//! Why: once a trip lands, the drain and the gateway each have a few
//! hundred nanoseconds of work before the first cancel leaves; what they
//! wait for on a busy host is a core. A `SCHED_FIFO` thread runs as soon as
//! it is runnable, ahead of every normal (`SCHED_OTHER`) thread on its core.
//! It is not a reserved core: on a host whose cores the kernel also gives to
//! other work, the thread still waits for interrupts and other real-time
//! threads. `BENCHMARKS.md` says what a production host adds (`isolcpus`,
//! `nohz_full`).
//!
//! The policy is set by the thread itself when it starts, and the spawning
//! call waits for the answer: a host that refuses it (no `CAP_SYS_NICE`, an
//! `RLIMIT_RTPRIO` below the priority, a container without real-time
//! runtime) gets a [`RealtimeError`] saying so and no thread, never a
//! thread silently running at normal priority.
//!
//! With their default back-off both threads sleep when idle, so a
//! `SCHED_FIFO` thread does not hold its core while nothing happens. With a
//! busy back-off ([`BackoffConfig::busy`](crate::backoff::BackoffConfig::busy))
//! it never sleeps and no normal thread gets that core but for the kernel's
//! real-time throttling slack (`sched_rt_runtime_us`: 5% of each second by
//! default): measured on the 2-core development VM, two such threads
//! stalled the whole machine. Busy spinning under `SCHED_FIFO` is for a
//! core reserved to the thread (`isolcpus`), nothing else.

/// Why the scheduling policy was not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RealtimeError {
    /// The priority is outside what `SCHED_FIFO` accepts.
    #[error("SCHED_FIFO priority {priority} for the {thread} thread is out of range: use 1..={max} (or leave realtime unset)")]
    OutOfRange {
        /// The thread.
        thread: &'static str,
        /// Asked for.
        priority: u8,
        /// Highest the system accepts.
        max: i32,
    },
    /// The system does not allow this process real-time scheduling.
    #[error("SCHED_FIFO priority {priority} for the {thread} thread was refused: not permitted. Run as root, give the binary CAP_SYS_NICE (setcap cap_sys_nice+ep BINARY), raise RLIMIT_RTPRIO to at least {priority} (ulimit -r, or rtprio in /etc/security/limits.conf), or leave realtime unset")]
    NotPermitted {
        /// The thread.
        thread: &'static str,
        /// Asked for.
        priority: u8,
    },
    /// Any other refusal, with the system's error number.
    #[error("SCHED_FIFO priority {priority} for the {thread} thread was refused (errno {errno}); leave realtime unset or check the host's scheduler settings")]
    Refused {
        /// The thread.
        thread: &'static str,
        /// Asked for.
        priority: u8,
        /// `pthread_setschedparam`'s answer.
        errno: i32,
    },
}

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1..=99 on
/// Linux). `thread` names it in the error.
pub fn set_current_thread_fifo(thread: &'static str, priority: u8) -> Result<(), RealtimeError> {
    // SAFETY: no arguments, no memory; returns -1 only for a bad policy.
    let (min, max) = unsafe {
        (
            libc::sched_get_priority_min(libc::SCHED_FIFO),
            libc::sched_get_priority_max(libc::SCHED_FIFO),
        )
    };
    if i32::from(priority) < min.max(1) || i32::from(priority) > max {
        return Err(RealtimeError::OutOfRange {
            thread,
            priority,
            max,
        });
    }
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `pthread_self()` is the calling thread, alive for the call;
    // `param` is a valid sched_param read by the call only.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    match rc {
        0 => Ok(()),
        libc::EPERM => Err(RealtimeError::NotPermitted { thread, priority }),
        errno => Err(RealtimeError::Refused {
            thread,
            priority,
            errno,
        }),
    }
}

/// The calling thread's policy and priority, e.g. `(SCHED_FIFO, 10)`.
pub fn current_thread_policy() -> (i32, i32) {
    let mut policy = 0;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: both out-pointers are valid for writes; the thread is ours.
    unsafe { libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param) };
    (policy, param.sched_priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_priority_is_refused_with_the_range() {
        let e = std::thread::spawn(|| set_current_thread_fifo("test", 0))
            .join()
            .unwrap()
            .unwrap_err();
        assert!(matches!(e, RealtimeError::OutOfRange { .. }), "{e}");
        assert!(e.to_string().contains("1..="), "{e}");
    }

    #[test]
    fn a_thread_gets_fifo_or_a_clear_refusal() {
        // Whether this host allows SCHED_FIFO depends on the host: both
        // answers are checked for what they must say.
        let (r, policy) = std::thread::spawn(|| {
            let r = set_current_thread_fifo("test", 1);
            (r, current_thread_policy())
        })
        .join()
        .unwrap();
        match r {
            Ok(()) => assert_eq!(policy, (libc::SCHED_FIFO, 1)),
            Err(e) => {
                assert_eq!(policy.0, libc::SCHED_OTHER);
                assert!(e.to_string().contains("refused"), "{e}");
            }
        }
    }
}
