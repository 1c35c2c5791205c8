//! Process hardening: keep key material out of swap and core dumps.

/// Locks all current and future memory (`mlockall`) unless `disable_mlock`,
/// forbids core dumps (`RLIMIT_CORE = 0`) and marks the process non-dumpable
/// (`PR_SET_DUMPABLE = 0`, which also stops same-user `ptrace` attaches).
///
/// A failed `mlockall` is an error: a node that silently lets keys reach swap
/// is worse than one that refuses to start. Hosts without `CAP_IPC_LOCK`
/// (or with a low `RLIMIT_MEMLOCK`) set `disable_mlock = true` and use
/// encrypted swap or none.
pub fn harden(disable_mlock: bool) -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};

    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| format!("cannot disable core dumps (setrlimit RLIMIT_CORE): {e}"))?;
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_dumpable(false).map_err(|e| {
        format!("cannot mark the process non-dumpable (prctl PR_SET_DUMPABLE): {e}")
    })?;
    if disable_mlock {
        tracing::warn!("mlock disabled by configuration: key material may be swapped to disk");
    } else {
        use nix::sys::mman::{MlockAllFlags, mlockall};
        mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(|e| {
            format!(
                "cannot lock memory (mlockall): {e}; grant CAP_IPC_LOCK and raise RLIMIT_MEMLOCK, or set disable_mlock = true (`sigil dev --disable-mlock`) if swap is encrypted or off"
            )
        })?;
    }
    Ok(())
}
