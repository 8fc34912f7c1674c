//! A run id held by one harness process on this machine.
//!
//! A run's id is its folder's name, `<YYYYmmdd-HHMMSS>-<name>`, and it names what the run
//! shares with others: its database `flowline_run_<id>` and its Redis key prefix
//! `flowline:<id>:` on a given server. Two runs of one scenario started in the same second
//! into different `--out` folders (parallel tests, two CI jobs) would get the same id and
//! take each other's database (the second drops it; the first to end drops it under the
//! other) and Redis keys. So the id is also claimed in a folder every harness process of
//! this machine sees, `$TMPDIR/flowline-run-ids/<id>` (created with `create_new`, atomic),
//! and released when the run ends; a taken id makes the run folder take the next suffix.
//!
//! A claim left by a process killed with SIGKILL only ever blocks ids of the second it
//! was taken in (run ids carry the time), so it is harmless; it is removed by the next
//! claim of that folder that finds it a day old.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Claims older than this are leftovers of killed processes (a run's id is only ever
/// claimed in the second it names).
const STALE: Duration = Duration::from_secs(24 * 3600);

/// The machine-wide folder of claims.
pub fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("flowline-run-ids")
}

/// A claimed run id; released on drop.
#[derive(Debug)]
pub struct RunIdClaim {
    /// The claim file (`None`: the claims folder could not be used, nothing to release).
    path: Option<PathBuf>,
}

impl RunIdClaim {
    /// Claim `id` in `dir`: `Ok(None)` when another process holds it. When `dir` cannot be
    /// used at all (not writable), the run goes on unclaimed, said once on stderr: it
    /// only loses the guard against a same-second twin.
    pub fn take(dir: &Path, id: &str) -> Option<RunIdClaim> {
        if let Err(e) = ensure_dir(dir) {
            eprintln!(
                "flowline: warning: cannot use {} to claim the run id ({e}); a run of the same \
                 scenario started in the same second elsewhere on this machine would share its \
                 database and Redis keys",
                dir.display()
            );
            return Some(RunIdClaim { path: None });
        }
        let path = dir.join(id);
        remove_if_stale(&path);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => {
                // The holder, for whoever wonders; the claim is the file's existence.
                let _ = std::io::Write::write_all(
                    &mut &f,
                    format!("{}\n", std::process::id()).as_bytes(),
                );
                Some(RunIdClaim { path: Some(path) })
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => None,
            Err(e) => {
                eprintln!(
                    "flowline: warning: cannot claim the run id at {} ({e}); going on unclaimed",
                    path.display()
                );
                Some(RunIdClaim { path: None })
            }
        }
    }
}

impl Drop for RunIdClaim {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Create the claims folder, writable by every user of the machine (sticky, like /tmp).
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o1777).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::create_dir_all(dir.parent().unwrap_or(dir))?;
            ensure_dir(dir)
        }
        Err(e) => Err(e),
    }
}

fn remove_if_stale(path: &Path) {
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > STALE);
    if old {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_held_by_one_claim_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ids");
        let a = RunIdClaim::take(&dir, "20260101-000000-x").unwrap();
        assert!(RunIdClaim::take(&dir, "20260101-000000-x").is_none());
        let b = RunIdClaim::take(&dir, "20260101-000000-y").unwrap();
        drop(a);
        assert!(RunIdClaim::take(&dir, "20260101-000000-x").is_some());
        drop(b);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_day_old_claim_is_a_leftover() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ids");
        std::fs::create_dir(&dir).unwrap();
        // Left by a process killed a day ago (SIGKILL: no drop).
        let f = std::fs::File::create(dir.join("x")).unwrap();
        f.set_modified(SystemTime::now() - STALE - Duration::from_secs(60))
            .unwrap();
        assert!(RunIdClaim::take(&dir, "x").is_some());
        // A fresh one is not.
        std::fs::File::create(dir.join("y")).unwrap();
        assert!(RunIdClaim::take(&dir, "y").is_none());
    }
}
