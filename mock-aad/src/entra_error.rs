//! Error responses shaped like Microsoft Entra ID's.
//!
//! Entra answers a failed token request with JSON: `error` (the OAuth code), `error_description` starting
//! with `AADSTSnnnn:` and ending with trace id, correlation id and timestamp, `error_codes`, `timestamp`,
//! `trace_id`, `correlation_id`, `error_uri`. Clients surface `error_description` verbatim (MSAL-go puts the
//! whole body in its error), so the wording follows what Entra is seen to send.

use serde::Serialize;

/// One Entra error: HTTP status, OAuth error code, AADSTS number and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraError {
    pub status: u16,
    /// OAuth 2.0 `error` (`invalid_request`, `invalid_client`, ...).
    pub error: &'static str,
    /// The AADSTS number.
    pub code: u32,
    /// The message after `AADSTSnnnn: `.
    pub message: String,
}

/// The JSON body.
#[derive(Debug, Serialize)]
pub struct EntraErrorBody {
    pub error: &'static str,
    pub error_description: String,
    pub error_codes: Vec<u32>,
    pub timestamp: String,
    pub trace_id: String,
    pub correlation_id: String,
    pub error_uri: String,
}

impl EntraError {
    pub fn new(status: u16, error: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            code,
            message: message.into(),
        }
    }

    /// The JSON body, with this request's correlation id (clients send `client-request-id`).
    pub fn body(&self, correlation_id: &str) -> EntraErrorBody {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let timestamp = entra_timestamp(time::OffsetDateTime::now_utc());
        EntraErrorBody {
            error: self.error,
            error_description: format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                self.code, self.message
            ),
            error_codes: vec![self.code],
            timestamp,
            trace_id,
            correlation_id: correlation_id.to_string(),
            error_uri: format!("https://login.microsoftonline.com/error?code={}", self.code),
        }
    }

    // --- the errors the mock plays -------------------------------------------------------------------------

    pub fn tenant_not_found(tenant: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        )
    }

    /// Entra answers discovery of an unknown tenant with `invalid_tenant`.
    pub fn tenant_not_found_discovery(tenant: &str) -> Self {
        Self {
            error: "invalid_tenant",
            ..Self::tenant_not_found(tenant)
        }
    }

    pub fn missing_parameter(name: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    pub fn post_only(method: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            900561,
            format!("The endpoint only accepts POST requests. Received a {method} request."),
        )
    }

    pub fn unsupported_grant(grant: &str) -> Self {
        Self::new(
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        )
    }

    /// Entra names the directory by its display name. Public sample (Azure-Samples/
    /// azure-health-data-and-ai-samples#100, 2023): "AADSTS700016: Application with identifier '63890e31-...'
    /// was not found in the directory 'Default Directory'. This can happen if the application has not been
    /// installed by the administrator of the tenant or consented to by any user in the tenant. You may have
    /// sent your authentication request to the wrong tenant."
    pub fn unknown_client(client_id: &str, directory: &str) -> Self {
        Self::new(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{directory}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    pub fn no_client_credential() -> Self {
        Self::new(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    }

    pub fn bad_assertion_type(got: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            900144,
            format!(
                "The request body must contain the following parameter: 'client_assertion_type'. Expected 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', received '{got}'."
            ),
        )
    }

    pub fn malformed_assertion() -> Self {
        Self::new(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        )
    }

    pub fn bad_client_secret(client_id: &str) -> Self {
        Self::new(
            401,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        )
    }

    /// The legacy answer (2022-2023 samples, e.g. Azure/azure-workload-identity#340): one message naming issuer,
    /// subject and audience. Played only with `federated_credential_errors: combined`.
    pub fn no_matching_fic(issuer: &str, subject: &str, audience: &str) -> Self {
        Self::new(
            401,
            "invalid_client",
            70021,
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'. https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"
            ),
        )
    }

    /// AADSTS700211/700212/700213: what tenants answer since 2024. Public samples (terraform and `az login`
    /// logs 2025-2026): "AADSTS700213: No matching federated identity record found for presented assertion
    /// subject 'system:serviceaccount:NS:SA'. Check your federated identity credential Subject, Audience and
    /// Issuer against the presented assertion.
    /// https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
    pub fn no_matching_fic_issuer(issuer: &str) -> Self {
        Self::fic_field(700211, "issuer", issuer)
    }
    pub fn no_matching_fic_audience(audience: &str) -> Self {
        Self::fic_field(700212, "audience", audience)
    }
    pub fn no_matching_fic_subject(subject: &str) -> Self {
        Self::fic_field(700213, "subject", subject)
    }
    fn fic_field(code: u32, what: &str, value: &str) -> Self {
        Self::new(
            401,
            "invalid_client",
            code,
            format!(
                "No matching federated identity record found for presented assertion {what} '{value}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
            ),
        )
    }

    /// A subject that matches a federated credential only when letter case is ignored (Entra matches
    /// case-sensitively since 2024-2025). Public sample (Azure/login#515, 2025-02-22; same text in #497 and
    /// #573; #517 is the same error): "AADSTS7002138: No matching federated identity record found for
    /// presented assertion subject 'repo:...:environment:Production'. The subject matches with
    /// case-insensitive comparison, but not with case-sensitive comparison. Check your federated identity
    /// credential Subject, Audience and Issuer against the presented assertion. See documentation at:
    /// https://learn.microsoft.com/entra/workload-id/workload-identity-federation. See breaking change
    /// notification and remediation at:
    /// https://learn.microsoft.com/en-us/entra/identity-platform/reference-breaking-changes#august-2024."
    pub fn no_matching_fic_subject_case(subject: &str) -> Self {
        Self::new(
            401,
            "invalid_client",
            7002138,
            format!(
                "No matching federated identity record found for presented assertion subject '{subject}'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. See documentation at: https://learn.microsoft.com/entra/workload-id/workload-identity-federation. See breaking change notification and remediation at: https://learn.microsoft.com/en-us/entra/identity-platform/reference-breaking-changes#august-2024."
            ),
        )
    }

    /// Public sample (AzureAD/microsoft-authentication-library-for-dotnet#4951, 2024-10-03): "AADSTS700024:
    /// Client assertion is not within its valid time range. Current time: 2024-10-02T22:05:03.6755165Z,
    /// assertion valid from 1970-01-01T00:00:00.0000000Z, expiry time of assertion
    /// 2024-10-02T21:30:53.0000000Z. Review the documentation at
    /// https://learn.microsoft.com/entra/identity-platform/certificate-credentials" — the current time carries
    /// Entra's sub-second digits (100 ns ticks); the assertion's times are whole seconds; a missing `nbf`
    /// prints as the epoch.
    pub fn assertion_time_range(
        now: time::OffsetDateTime,
        not_before: Option<i64>,
        expiry: Option<i64>,
    ) -> Self {
        let fmt = |t: Option<i64>| match t {
            Some(t) => assertion_time(t),
            None => "(none)".to_string(),
        };
        Self::new(
            401,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                entra_current_time(now),
                fmt(not_before.or(Some(0))),
                fmt(expiry)
            ),
        )
    }

    /// A federated assertion whose `kid` the issuer's JWKS does not list (AADSTS50013 belongs to certificate
    /// credentials and on-behalf-of). Public sample (Azure/azure-workload-identity#1232, 2024-01-14):
    /// "AADSTS7000272: The certificate with identifier DFA184AB... used to sign the federated credential could
    /// not be found in the metadata of identity provider https://oidc.svasys.com. Please validate that your
    /// Identity Provider's metadata exposes the key used to sign the incoming token." With no `kid` the
    /// identifier is empty (same text in Azure/azure-workload-identity#616: "identifier  used").
    pub fn signature_key_not_found(kid: &str, issuer: &str) -> Self {
        Self::new(
            401,
            "invalid_client",
            7000272,
            format!("The certificate with identifier {kid} used to sign the federated credential could not be found in the metadata of identity provider {issuer}. Please validate that your Identity Provider's metadata exposes the key used to sign the incoming token."),
        )
    }

    /// A listed key whose signature does not verify. No public sample for federated assertions; the
    /// certificate-credential text is the closest Entra wording (Azure/azure-sdk-for-java#25109: "AADSTS50013:
    /// Assertion failed signature validation. [Reason - The provided signature value did not match the expected
    /// signature value., ...]").
    pub fn signature_mismatch() -> Self {
        Self::new(
            401,
            "invalid_client",
            50013,
            "Assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value.]",
        )
    }

    pub fn issuer_keys_unavailable(issuer: &str, why: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            50166,
            format!("Request to External OIDC endpoint failed. Issuer: '{issuer}'. ({why})"),
        )
    }

    /// Public samples (MicrosoftDocs/azure-docs#99862, 2022; microsoftgraph/msgraph-sdk-python#181, 2023):
    /// "AADSTS1002012: The provided value for scope User.Read is not valid. Client credential flows must have a
    /// scope value with /.default suffixed to the resource identifier (application ID URI)." (AADSTS70011 is
    /// the older wording.)
    pub fn invalid_scope(scope: &str) -> Self {
        Self::new(
            400,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )
    }

    pub fn unknown_resource(resource: &str, tenant: &str) -> Self {
        Self::new(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// Instance discovery for an authority host Entra does not know. Public sample (AzureAD/
    /// microsoft-authentication-library-for-js#2357; AzureAD/microsoft-authentication-library-for-go#438 cites
    /// the code): 400, `{"error":"invalid_instance","error_description":"AADSTS50049: Unknown or invalid
    /// instance. Trace ID: ..."`.
    pub fn unknown_instance() -> Self {
        Self::new(
            400,
            "invalid_instance",
            50049,
            "Unknown or invalid instance.",
        )
    }

    /// A parameter sent twice. Public sample (MicrosoftDocs/azure-dev-docs#934, POST /oauth2/v2.0/token):
    /// `[invalid_request] AADSTS9000411: The request is not properly formatted. The parameter 'scope' is
    /// duplicated.`
    pub fn duplicated_parameter(name: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            9000411,
            format!("The request is not properly formatted. The parameter '{name}' is duplicated."),
        )
    }

    /// Entra's generic malformed-request error ("AADSTS9002313: Invalid request. Request is malformed or
    /// invalid.", seen publicly on the token endpoint), with what the mock found wrong in parentheses.
    pub fn malformed_request(why: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            9002313,
            format!("Invalid request. Request is malformed or invalid. ({why})"),
        )
    }

    /// A body over the mock's limit. No public sample of what Entra's front end answers (it is not an STS
    /// error); 413 with the malformed-request code, naming the limit.
    pub fn request_too_large(limit_bytes: usize) -> Self {
        Self {
            status: 413,
            ..Self::malformed_request(&format!(
                "the request body is larger than {limit_bytes} bytes; token requests are a few KiB"
            ))
        }
    }

    /// A body that did not arrive in time (e.g. shorter than its Content-Length). AADSTS90012 is
    /// "RequestTimeout - The request has timed out." in Entra's error code reference.
    pub fn request_timeout(after: std::time::Duration) -> Self {
        Self::new(
            408,
            "invalid_request",
            90012,
            format!(
                "The request has timed out. (the request body did not arrive in full within {} s; is Content-Length larger than the body?)",
                after.as_secs()
            ),
        )
    }

    pub fn throttled() -> Self {
        Self::new(
            429,
            "temporarily_unavailable",
            90055,
            "There are too many incoming requests. Please try again later.",
        )
    }

    pub fn unavailable() -> Self {
        Self::new(
            503,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        )
    }
}

/// `2022-10-27 23:39:22Z`, as in Entra's `timestamp`.
pub fn entra_timestamp(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    t.format(&f).unwrap_or_default()
}

/// An assertion's `nbf`/`exp` as AADSTS700024 prints it: `2024-10-02T21:30:53.0000000Z` (whole seconds).
fn assertion_time(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].0000000Z");
    t.format(&f).unwrap_or_default()
}

/// Entra's clock in AADSTS700024: `2024-10-02T22:05:03.6755165Z` (seven sub-second digits, 100 ns ticks).
fn entra_current_time(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_starts_with_the_code_and_carries_ids() {
        let body = EntraError::unknown_client("c", "t").body("corr-1");
        assert!(body
            .error_description
            .starts_with("AADSTS700016: Application with identifier 'c'"));
        assert!(body.error_description.contains("Correlation ID: corr-1"));
        assert!(body
            .error_description
            .contains(&format!("Trace ID: {}", body.trace_id)));
        assert_eq!(body.error_codes, vec![700016]);
        assert_eq!(body.error, "unauthorized_client");
    }

    #[test]
    fn time_range_message_formats_like_entra() {
        // The shape of the public sample quoted on `assertion_time_range`.
        let now =
            time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let e = EntraError::assertion_time_range(now, None, Some(1_600_000_600));
        assert!(
            e.message.contains("Current time: 2023-11-14T22:13:20.1234567Z, assertion valid from 1970-01-01T00:00:00.0000000Z, expiry time of assertion 2020-09-13T12:36:40.0000000Z."),
            "{}",
            e.message
        );
    }

    #[test]
    fn current_time_keeps_seven_digits_even_on_a_whole_second() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(entra_current_time(now), "2023-11-14T22:13:20.0000000Z");
    }
}
