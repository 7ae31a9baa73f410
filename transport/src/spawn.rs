//! The one raw OS call around spawning a child that `std::process::Command` cannot make
//! safely: asking the kernel to kill the child when its parent goes away.

use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// Makes `command`'s child receive `SIGKILL` when the thread that spawns it exits (Linux's
/// `PR_SET_PDEATHSIG`, which survives `exec`), for programs that do not ask for it themselves
/// (eKuiper's plugin SDKs): a host killed with `SIGKILL` then leaves no such child behind. A
/// child whose parent is already gone when it starts does not run (its `exec` is not reached).
///
/// Spawn from a thread that lives as long as the child should.
pub fn kill_child_on_parent_death(command: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe work is allowed: two system calls (prctl, getppid) made directly by
    // rustix, and an io::Error built from an error number or a kind; nothing allocates or locks.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::ErrorKind::NotFound.into());
            }
            Ok(())
        });
    }
}
