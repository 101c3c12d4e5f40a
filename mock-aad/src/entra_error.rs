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

    pub fn unknown_client(client_id: &str, tenant: &str) -> Self {
        Self::new(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
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

    pub fn assertion_time_range(now: i64, not_before: Option<i64>, expiry: Option<i64>) -> Self {
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
                assertion_time(now),
                fmt(not_before.or(Some(0))),
                fmt(expiry)
            ),
        )
    }

    pub fn signature_key_not_found(kid: &str) -> Self {
        Self::new(
            401,
            "invalid_client",
            50013,
            format!("Assertion failed signature validation. [Reason - The key was not found., Key ID of key used by client: '{kid}']"),
        )
    }

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

    pub fn invalid_scope(scope: &str) -> Self {
        Self::new(
            400,
            "invalid_scope",
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
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

/// `2024-10-02T22:05:03.0000000Z`, as in AADSTS700024.
fn assertion_time(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].0000000Z");
    t.format(&f).unwrap_or_default()
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
        let e = EntraError::assertion_time_range(
            1_700_000_000,
            Some(1_600_000_000),
            Some(1_600_000_600),
        );
        assert!(
            e.message.contains("Current time: 2023-11-14T22:13:20.0000000Z, assertion valid from 2020-09-13T12:26:40.0000000Z"),
            "{}",
            e.message
        );
    }
}
