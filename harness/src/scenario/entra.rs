//! The `entra:` section of `scenario.yaml`: how the scenario's Entra tenant differs from one that simply
//! accepts the identity the manifests name. Absent means no difference.
//!
//! ```yaml
//! entra:
//!   registered_client_id: 0a7e5c1d-...   # the app Entra knows (the manifests name another: AADSTS700016)
//!   access_token_lifetime_seconds: 20    # `expires_in` of issued access tokens (refresh paths)
//!   outage: { after_seconds: 30, for_seconds: 25 }   # the token endpoint answers 503 for a while
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::validate::{guid_message, is_guid};
use super::ScenarioError;

/// Longest access-token lifetime a scenario may set: a day (Entra issues 60-90 minutes; longer says nothing
/// more about a refresh path).
pub const MAX_ACCESS_TOKEN_LIFETIME_SECONDS: u64 = 86_400;
/// Shortest: KEDA polls every few seconds, and a token that expires before the front checks it tests the
/// clock, not KEDA.
pub const MIN_ACCESS_TOKEN_LIFETIME_SECONDS: u64 = 5;
/// An outage starts at most this long after the manifests are applied, and lasts at most this long: a run
/// waits for both.
pub const MAX_OUTAGE_START_SECONDS: u64 = 600;
pub const MAX_OUTAGE_SECONDS: u64 = 600;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraSettings {
    /// The managed identity's client id as the tenant holds it, when the manifests' `identityId` is another:
    /// the operator's `AZURE_CLIENT_ID` and the database principal then carry this id, and KEDA sends the
    /// manifests' id, which the tenant does not know.
    #[serde(default)]
    pub registered_client_id: Option<String>,
    /// `expires_in` of the access tokens the Entra mock issues (Entra's usual 3599 when absent).
    #[serde(default)]
    pub access_token_lifetime_seconds: Option<u64>,
    /// The token endpoint answers HTTP 503 (Entra's `temporarily_unavailable`) for a while.
    #[serde(default)]
    pub outage: Option<Outage>,
}

/// A window in which every token request gets 503, counted from when the manifests are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    pub after_seconds: u64,
    pub for_seconds: u64,
}

fn field(path: &Path, field: &str, message: String) -> ScenarioError {
    ScenarioError::Field {
        path: path.display().to_string(),
        field: field.into(),
        message,
    }
}

/// Bounds and id shapes of the section (`path` is the scenario file, for the error).
pub(super) fn validate(path: &Path, entra: &EntraSettings) -> Result<(), ScenarioError> {
    if let Some(id) = &entra.registered_client_id {
        if !is_guid(id) {
            return Err(field(
                path,
                "entra.registered_client_id",
                guid_message(
                    id,
                    "the client id of the managed identity the tenant holds (Azure portal: the managed identity > Overview > Client ID)",
                ),
            ));
        }
    }
    if let Some(s) = entra.access_token_lifetime_seconds {
        if !(MIN_ACCESS_TOKEN_LIFETIME_SECONDS..=MAX_ACCESS_TOKEN_LIFETIME_SECONDS).contains(&s) {
            return Err(field(
                path,
                "entra.access_token_lifetime_seconds",
                format!(
                    "{s} s is outside {MIN_ACCESS_TOKEN_LIFETIME_SECONDS}..={MAX_ACCESS_TOKEN_LIFETIME_SECONDS}; \
                     Entra issues 3599 (leave it out for that), a refresh path shows with e.g. 20"
                ),
            ));
        }
    }
    if let Some(o) = entra.outage {
        if o.after_seconds > MAX_OUTAGE_START_SECONDS {
            return Err(field(
                path,
                "entra.outage.after_seconds",
                format!("{} s is more than {MAX_OUTAGE_START_SECONDS}: the run waits for the outage; start it sooner", o.after_seconds),
            ));
        }
        if !(1..=MAX_OUTAGE_SECONDS).contains(&o.for_seconds) {
            return Err(field(
                path,
                "entra.outage.for_seconds",
                format!(
                    "{} s is outside 1..={MAX_OUTAGE_SECONDS}: the run waits for the outage to end",
                    o.for_seconds
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<(), String> {
        let s: EntraSettings = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        validate(Path::new("scenarios/x/scenario.yaml"), &s).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_section_is_accepted() {
        check("registered_client_id: 0a7e5c1d-2b3f-4e6a-8c9d-1e2f3a4b5c6d\naccess_token_lifetime_seconds: 20\noutage: {after_seconds: 30, for_seconds: 25}\n").unwrap();
    }

    #[test]
    fn bad_values_name_the_field() {
        for (yaml, field) in [
            (
                "registered_client_id: \"x'; DROP\"",
                "entra.registered_client_id",
            ),
            (
                "access_token_lifetime_seconds: 0",
                "entra.access_token_lifetime_seconds",
            ),
            (
                "access_token_lifetime_seconds: 99999999",
                "entra.access_token_lifetime_seconds",
            ),
            (
                "outage: {after_seconds: 5, for_seconds: 0}",
                "entra.outage.for_seconds",
            ),
            (
                "outage: {after_seconds: 100000, for_seconds: 5}",
                "entra.outage.after_seconds",
            ),
        ] {
            let e = check(yaml).unwrap_err();
            assert!(
                e.contains(field) && e.contains("scenario.yaml"),
                "{yaml}: {e}"
            );
        }
        let e = check("outage: {after_seconds: 5, for_seconds: 5, kind: throttle}").unwrap_err();
        assert!(e.contains("kind"), "{e}");
    }
}
