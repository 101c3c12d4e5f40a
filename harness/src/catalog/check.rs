//! `keda-harness catalog check`: the KEDA releases the Go module proxy offers that the catalog lacks.

use super::derive::{DeriveError, GoRunner};
use super::{Catalog, KedaVersion, KEDA_MODULE};

/// What `go list -m -versions` shows next to the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The newest version in the catalog.
    pub newest_in_catalog: KedaVersion,
    /// Every release the proxy lists (pre-releases left out), oldest first.
    pub listed: Vec<KedaVersion>,
    /// Listed versions that are not releases (`v2.21.0-rc1`) and were ignored.
    pub prereleases: Vec<String>,
    /// Listed releases newer than the catalog's newest, oldest first.
    pub missing: Vec<KedaVersion>,
}

impl CheckReport {
    /// Compare a proxy listing (the `Versions` of `go list -m -versions -json`) with the catalog.
    pub fn new(catalog: &Catalog, versions: &[String]) -> CheckReport {
        let newest_in_catalog = catalog.newest().version;
        let mut listed = Vec::new();
        let mut prereleases = Vec::new();
        for v in versions {
            // A release is exactly vMAJOR.MINOR.PATCH; anything after the patch (`-rc1`, `+incompatible`)
            // is not one the catalog follows.
            match v.parse::<KedaVersion>() {
                Ok(parsed) if v.starts_with('v') => listed.push(parsed),
                _ => prereleases.push(v.clone()),
            }
        }
        listed.sort();
        listed.dedup();
        let missing = listed
            .iter()
            .copied()
            .filter(|v| *v > newest_in_catalog)
            .collect();
        CheckReport {
            newest_in_catalog,
            listed,
            prereleases,
            missing,
        }
    }

    /// The report as text: each missing version with the command that derives its entry.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "catalog newest: {}\nthe Go module proxy lists {} release(s) of {KEDA_MODULE}: {}\n",
            self.newest_in_catalog,
            self.listed.len(),
            if self.listed.is_empty() {
                "none".to_string()
            } else {
                self.listed
                    .iter()
                    .map(KedaVersion::tag)
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        );
        if !self.prereleases.is_empty() {
            out.push_str(&format!(
                "ignored (not releases): {}\n",
                self.prereleases.join(" ")
            ));
        }
        if self.missing.is_empty() {
            out.push_str(&format!(
                "up to date: no listed release is newer than {}\n",
                self.newest_in_catalog
            ));
        } else {
            for v in &self.missing {
                out.push_str(&format!(
                    "missing: KEDA {v} — add it with `keda-harness catalog derive {}` (fill in the marked \
                     fields, append the entry to {})\n",
                    v.tag(),
                    super::CATALOG_REPO_PATH
                ));
            }
        }
        // The proxy's list is all `go list` can see: a release the proxy refuses (it answers 403 "This module
        // version is not available" for it) is neither listed nor derivable through it.
        out.push_str(
            "note: only what this proxy lists is seen; a release it refuses to serve is not listed here\n",
        );
        out
    }
}

/// `go list -m -versions -json github.com/kedacore/keda/v2`: the versions the proxy lists.
pub fn proxy_versions(go: &GoRunner) -> Result<Vec<String>, DeriveError> {
    let out = go.run(&["list", "-m", "-versions", "-json", KEDA_MODULE])?;
    if !out.status.success() {
        return Err(DeriveError::GoFailed {
            command: out.command,
            status: out.status.to_string(),
            output: out.stderr.trim_end().to_string(),
            hint: "check access to the Go module proxy (`go env GOPROXY`)".into(),
        });
    }
    #[derive(serde::Deserialize)]
    struct Listing {
        #[serde(rename = "Versions", default)]
        versions: Vec<String>,
        #[serde(rename = "Error")]
        error: Option<serde_json::Value>,
    }
    let listing: Listing =
        serde_json::from_slice(&out.stdout).map_err(|e| DeriveError::BadOutput {
            command: out.command.clone(),
            problem: e.to_string(),
            output: String::from_utf8_lossy(&out.stdout).into_owned(),
        })?;
    if let Some(error) = listing.error {
        return Err(DeriveError::GoFailed {
            command: out.command,
            status: out.status.to_string(),
            output: error.to_string(),
            hint: "check access to the Go module proxy (`go env GOPROXY`)".into(),
        });
    }
    Ok(listing.versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_releases_are_missing_and_prereleases_ignored() {
        let catalog = Catalog::embedded().unwrap();
        let newest = catalog.newest().version;
        let next_minor = KedaVersion::new(newest.major, newest.minor + 1, 0);
        let listed: Vec<String> = [
            "v2.15.1".to_string(),
            newest.tag(),
            format!("{}-rc1", next_minor.tag()),
            next_minor.tag(),
            "v2.0.0+incompatible".to_string(),
        ]
        .into();
        let report = CheckReport::new(&catalog, &listed);
        assert_eq!(report.missing, vec![next_minor]);
        assert_eq!(
            report.prereleases,
            vec![
                format!("{}-rc1", next_minor.tag()),
                "v2.0.0+incompatible".to_string()
            ]
        );
        let text = report.to_text();
        assert!(
            text.contains(&format!(
                "missing: KEDA {next_minor} — add it with `keda-harness catalog derive {}`",
                next_minor.tag()
            )),
            "{text}"
        );

        let up_to_date = CheckReport::new(&catalog, &["v2.15.1".to_string(), newest.tag()]);
        assert!(up_to_date.missing.is_empty());
        assert!(up_to_date.to_text().contains("up to date"));
    }
}
