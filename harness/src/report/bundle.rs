//! Where a diagnostics bundle goes: a directory no other cell and no other user can share.

use std::io;
use std::path::{Path, PathBuf};

/// Prefix of the private temp dir a bundle goes to when no report directory was given.
pub const TEMP_BUNDLE_PREFIX: &str = "keda-harness-diagnostics-";

/// How many `-2`, `-3`, ... suffixes are tried before giving up (a report dir holding that many bundles of
/// one cell is a report dir reused far too often).
const MAX_SUFFIX: u32 = 1000;

/// A fresh, empty directory for the diagnostics bundle of `cell` (e.g. `seed-2.15.0`), readable by this user
/// only (bundles hold logs).
///
/// - With a report directory: `<report_dir>/diagnostics/<cell>`, or `<cell>-2`, `<cell>-3`, ... when that is
///   taken, by this run's other cells (the same scenario twice, two scenario folders with the same `name`)
///   or an earlier run. Creating the directory is the claim, so cells running side by side never share one.
/// - Without: a new temp dir `keda-harness-diagnostics-<cell>-XXXXXX`, kept after the run (its path is in
///   the verdict).
///
/// `cell` must be one path component: scenario names are checked at load ([`crate::scenario`]), and this
/// checks again so that no caller can write outside the report directory.
pub fn claim_bundle_dir(report_dir: Option<&Path>, cell: &str) -> io::Result<PathBuf> {
    if cell.is_empty()
        || cell.starts_with('.')
        || !cell
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("diagnostics bundle name {cell:?} is not one plain path component"),
        ));
    }
    let Some(report_dir) = report_dir else {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TEMP_BUNDLE_PREFIX}{cell}-"))
            .permissions(private())
            .tempdir()?;
        return Ok(dir.keep());
    };
    let base = report_dir.join("diagnostics");
    std::fs::create_dir_all(&base)?;
    for n in 1..=MAX_SUFFIX {
        let name = if n == 1 {
            cell.to_string()
        } else {
            format!("{cell}-{n}")
        };
        let dir = base.join(name);
        match create_private_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} already holds {MAX_SUFFIX} bundles named {cell}; use a fresh --report-dir",
            base.display()
        ),
    ))
}

fn private() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o700)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn same_cell_twice_gets_two_private_bundles() {
        let r = tempfile::tempdir().unwrap();
        let a = claim_bundle_dir(Some(r.path()), "seed-2.15.0").unwrap();
        let b = claim_bundle_dir(Some(r.path()), "seed-2.15.0").unwrap();
        assert_eq!(a, r.path().join("diagnostics/seed-2.15.0"));
        assert_eq!(b, r.path().join("diagnostics/seed-2.15.0-2"));
        assert_eq!(mode(&a), 0o700);
    }

    #[test]
    fn without_a_report_dir_the_bundle_is_a_kept_private_temp_dir() {
        let d = claim_bundle_dir(None, "seed-2.14.1").unwrap();
        let name = d.file_name().unwrap().to_str().unwrap().to_string();
        let kept = d.is_dir();
        let m = mode(&d);
        std::fs::remove_dir(&d).unwrap();
        assert!(
            name.starts_with("keda-harness-diagnostics-seed-2.14.1-"),
            "{name}"
        );
        assert!(kept);
        assert_eq!(m, 0o700);
    }

    #[test]
    fn names_that_would_leave_the_report_dir_are_refused() {
        let r = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "/abs", "a/b", ".hidden", "nul\0x", ".."] {
            let e = claim_bundle_dir(Some(r.path()), bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(
            !r.path().join("diagnostics").exists()
                || std::fs::read_dir(r.path().join("diagnostics"))
                    .unwrap()
                    .next()
                    .is_none()
        );
    }
}
