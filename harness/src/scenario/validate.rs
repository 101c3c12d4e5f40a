//! Checks on what a scenario's author wrote, before anything uses it: bounds that keep a run finite, names
//! that become paths, and ids that become Entra configuration and Kubernetes annotations.

use std::io::{self, Read};
use std::path::{Component, Path};

use super::{ScenarioError, ScenarioFile};

/// Rows a scenario may seed, in `data.rows` and in total after every `then[].add_rows`. The harness seeds
/// the table in one transaction while KEDA polls it, and KEDA never creates more Jobs than
/// `maxReplicaCount` (at most a few hundred in practice), so more rows only make a run slower (millions take
/// minutes to insert) without changing what KEDA decides.
pub const MAX_ROWS: u64 = 100_000;

/// The longest polling interval a run accepts. A run waits for eight intervals for KEDA's first sign and
/// polls Jobs at this interval, so an interval of hours (or years) is a run that never ends.
pub const MAX_POLLING_INTERVAL_SECONDS: u64 = 3600;

/// `scenario.yaml` is a page of settings; anything this big is a wrong file.
pub const MAX_SCENARIO_FILE_BYTES: u64 = 1024 * 1024;

/// One manifest file. Kubernetes refuses objects over about 1.5 MiB (etcd's request limit), and a
/// scenario's file holds a handful of them.
pub const MAX_MANIFEST_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Manifest documents in one scenario: each is applied one by one to the API server.
pub const MAX_DOCUMENTS: usize = 1000;

/// A value as it may be shown in an error: escaped (quotes, newlines and NULs visible) and cut short.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 80;
    let cut: String = s.chars().take(MAX).collect();
    let mut out = format!("{cut:?}");
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// A GUID as Entra writes tenant, client and object ids: 8-4-4-4-12 hex digits. The braced, URN and
/// undashed forms `uuid` also accepts are refused: Entra never issues them, and they would never match the
/// ids in the tokens KEDA receives.
pub(crate) fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// The error text for a value that is not a GUID; `what` says where the right value is found.
pub(super) fn guid_message(value: &str, what: &str) -> String {
    format!(
        "{} is not a GUID: write {what} as 8-4-4-4-12 hex digits, e.g. 3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41",
        shown(value)
    )
}

/// Scenario names become report paths (`diagnostics/<name>-<version>/`) and JUnit test names.
pub(super) fn check_name(path: &Path, name: &str) -> Result<(), ScenarioError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        return Ok(());
    }
    Err(field(
        path,
        "name",
        format!(
            "{} cannot name the scenario's report files: use 1 to 100 of the characters A-Z a-z 0-9 . _ - \
             and do not start with `.` (e.g. `seed` or `customer-4711`)",
            shown(name)
        ),
    ))
}

fn field(path: &Path, field: &str, message: String) -> ScenarioError {
    ScenarioError::Field {
        path: path.display().to_string(),
        field: field.into(),
        message,
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Everything in `scenario.yaml` that can be checked without the manifests.
pub(super) fn scenario_file(path: &Path, file: &ScenarioFile) -> Result<(), ScenarioError> {
    check_name(path, &file.name)?;
    if file.manifests.is_empty() {
        return Err(field(
            path,
            "manifests",
            "empty: list the manifest files of the scenario, relative to its folder, e.g. `manifests: [manifests.yaml]`".into(),
        ));
    }
    for (i, m) in file.manifests.iter().enumerate() {
        let p = Path::new(m);
        let inside = !m.is_empty()
            && !m.contains('\0')
            && p.components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(field(
                path,
                &format!("manifests[{i}]"),
                format!(
                    "{} is not a file inside the scenario folder: name it relative to the folder, without `..` \
                     or a leading `/` (copy shared manifests into the folder)",
                    shown(m)
                ),
            ));
        }
    }
    let ident = &file.identity;
    if !is_guid(&ident.tenant_id) {
        return Err(field(
            path,
            "identity.tenant_id",
            guid_message(
                &ident.tenant_id,
                "the directory (tenant) id (Azure portal: Microsoft Entra ID > Overview > Tenant ID)",
            ),
        ));
    }
    if !is_guid(&ident.object_id) {
        return Err(field(
            path,
            "identity.object_id",
            guid_message(
                &ident.object_id,
                "the managed identity's object (principal) id (Azure portal: the managed identity > Overview > Object (principal) ID)",
            ),
        ));
    }
    if let Some(id) = ident.client_id.as_deref().filter(|id| !is_guid(id)) {
        return Err(field(
            path,
            "identity.client_id",
            guid_message(
                id,
                "the managed identity's client id (Azure portal: the managed identity > Overview > Client ID)",
            ),
        ));
    }
    for (name, value, example) in [
        (
            "identity.federated_subject",
            &ident.federated_subject,
            "system:serviceaccount:keda:keda-operator",
        ),
        (
            "identity.federated_audience",
            &ident.federated_audience,
            "api://AzureADTokenExchange",
        ),
    ] {
        if value.is_empty() || has_control(value) {
            return Err(field(
                path,
                name,
                format!(
                    "{} must be one line of text as on the federated identity credential, e.g. `{example}`",
                    shown(value)
                ),
            ));
        }
    }
    if let Some(rows) = file.data.rows.filter(|r| *r > MAX_ROWS) {
        return Err(field(path, "data.rows", rows_message(rows)));
    }
    if let Some(pi) = file.knobs.polling_interval_seconds {
        if !(1..=MAX_POLLING_INTERVAL_SECONDS).contains(&pi) {
            return Err(field(
                path,
                "knobs.polling_interval_seconds",
                polling_message(pi),
            ));
        }
    }
    Ok(())
}

pub(super) fn rows_message(rows: u64) -> String {
    format!(
        "{rows} rows is more than the limit of {MAX_ROWS}: KEDA creates at most maxReplicaCount Jobs, so more rows \
         only make seeding slow (millions take minutes) without changing the verdict; use fewer rows"
    )
}

pub(super) fn polling_message(seconds: u64) -> String {
    format!(
        "{seconds} s is outside 1..={MAX_POLLING_INTERVAL_SECONDS}: a run waits eight polling intervals for KEDA's \
         first sign, so a longer interval is a run that does not end; set knobs.polling_interval_seconds (e.g. 5)"
    )
}

/// Read a scenario file of at most `limit` bytes, refusing flow nesting the YAML parser would take minutes
/// over. Only regular files are read: a FIFO or a device (`/dev/zero`, a symlink to one) would block or never
/// end.
pub(crate) fn read_capped(path: &Path, limit: u64) -> Result<String, ScenarioError> {
    let read_err = |source: io::Error| ScenarioError::Read {
        path: path.display().to_string(),
        source,
    };
    let too_large = |size: u64| ScenarioError::TooLarge {
        path: path.display().to_string(),
        size,
        limit,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file; name a YAML file",
        )));
    }
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut buf))
        .map_err(read_err)?;
    if buf.len() as u64 > limit {
        return Err(too_large(buf.len() as u64));
    }
    let text = String::from_utf8(buf).map_err(|e| {
        read_err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not UTF-8 text ({e}); save the file as UTF-8"),
        ))
    })?;
    // Before any YAML parser sees it: deep flow nesting takes the parser minutes (see `nesting`).
    super::nesting::check_flow_depth(&text).map_err(|line| ScenarioError::TooDeep {
        path: path.display().to_string(),
        line,
        limit: super::MAX_FLOW_DEPTH,
    })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_the_dashed_form_only() {
        assert!(is_guid("3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41"));
        for bad in [
            "",
            "3f1f7c2e5d7a4c559a371d2b6f0c8e41",
            "{3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41}",
            "3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e4\"",
            "3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e4\n",
            "urn:uuid:3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41",
        ] {
            assert!(!is_guid(bad), "{bad:?}");
        }
    }

    #[test]
    fn shown_values_make_quotes_and_newlines_visible_and_stay_short() {
        assert_eq!(shown("a\"b\nc"), r#""a\"b\nc""#);
        let long = "x".repeat(1000);
        assert!(shown(&long).chars().count() < 90);
    }

    #[test]
    fn devices_and_fifos_are_not_read() {
        let e = read_capped(Path::new("/dev/zero"), 10)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/dev/zero") && e.contains("not a regular file"),
            "{e}"
        );
    }
}
