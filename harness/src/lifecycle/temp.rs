//! Temporary directories that are recorded while they exist.

use std::path::{Path, PathBuf};

use super::state::{forget, record, LifecycleError, Resource};

/// A private (0700) temporary directory with an unpredictable name, recorded in the run's state file and
/// removed on drop — or by the sweep on a signal, or by the next start's reaper after SIGKILL.
#[derive(Debug)]
pub struct TrackedDir {
    // Field order is drop order: the directory goes before its record is forgotten.
    dir: Option<tempfile::TempDir>,
    id: u64,
}

impl TrackedDir {
    /// A new directory `PREFIX<random>` in the system temp dir. The prefix must start with `keda-harness-` or
    /// `mock-aad-` (the reaper deletes nothing else).
    pub fn new(prefix: &str) -> Result<Self, LifecycleError> {
        Self::new_in(&std::env::temp_dir(), prefix)
    }

    /// A new directory `PREFIX<random>` inside `parent`.
    pub fn new_in(parent: &Path, prefix: &str) -> Result<Self, LifecycleError> {
        debug_assert!(
            prefix.starts_with("keda-harness-") || prefix.starts_with("mock-aad-"),
            "{prefix}"
        );
        super::state::check_not_shutting_down(&format!("directory {prefix}*"))?;
        // A random suffix and mode 0700 (asked for: tempfile's default follows the umask): no other user can
        // predict the name or enter the directory.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|source| LifecycleError::TempDir {
                prefix: prefix.to_string(),
                dir: parent.to_path_buf(),
                source,
            })?;
        let id = record(Resource::Dir {
            path: dir.path().to_path_buf(),
        })?;
        Ok(Self { dir: Some(dir), id })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    /// The path, for messages and for values that outlive a borrow.
    pub fn to_path_buf(&self) -> PathBuf {
        self.path().to_path_buf()
    }
}

impl Drop for TrackedDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                // Keep the record: the sweep or the next start's reaper tries again.
                tracing::warn!(dir = %path.display(), "removing a temporary directory failed: {e}");
                return;
            }
        }
        forget(self.id);
    }
}
