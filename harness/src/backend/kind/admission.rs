//! KEDA's admission webhooks validate before any scenario manifest is applied.
//!
//! A rollout says the webhook pod is ready (`/readyz`), not that the API server can call it: the operator
//! writes the webhook's serving certificate (the `kedaorg-certs` Secret) and patches the CA bundle into the
//! `keda-admission` ValidatingWebhookConfiguration on its own schedule. Until then a call fails TLS, and
//! because KEDA ships `failurePolicy: Ignore`, the API server admits everything unvalidated. A scenario
//! applied in that window would be judged without KEDA's admission checks, which AKS's KEDA add-on runs.
//!
//! So the kind world waits for the real thing: a server-side dry run of a TriggerAuthentication that KEDA's
//! webhook refuses, polled until the refusal comes back. Nothing is created (dry run), and the refusal is
//! KEDA's own code deciding.

use std::time::{Duration, Instant};

use super::tools::{Tool, ToolCommand};
use super::KindError;

/// The probe's object: a TriggerAuthentication whose `podIdentity.identityId` is set to "". The KEDA CRD admits
/// it (the field is a plain optional string); KEDA's webhook refuses it.
pub const PROBE_NAME: &str = "keda-harness-admission-probe";

/// KEDA's refusal of the probe: `validateSpec` in apis/keda/v1alpha1/triggerauthentication_webhook.go, the
/// same text at v2.14.1 and v2.21.0: `identityId of PodIdentity should not be empty. If it's set, identityId
/// has to be different than ""`.
pub const REFUSAL: &str = "identityId of PodIdentity should not be empty";

/// The stand-up phase that waits here (in each kind cell's verdict).
pub const PHASE: &str = "KEDA admission webhooks validating";

/// How long the webhooks get to start validating after their rollout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The probe object in `namespace`, as YAML for `kubectl apply -f -`.
pub fn probe_yaml(namespace: &str) -> String {
    format!(
        "apiVersion: keda.sh/v1alpha1\n\
         kind: TriggerAuthentication\n\
         metadata:\n  name: {PROBE_NAME}\n  namespace: {namespace}\n\
         spec:\n  podIdentity:\n    provider: azure-workload\n    identityId: \"\"\n"
    )
}

/// `kubectl apply --dry-run=server` of the probe.
pub fn probe_command(context: &str, namespace: &str) -> ToolCommand {
    ToolCommand::new(
        Tool::Kubectl,
        ["--context", context, "apply", "--dry-run=server", "-f", "-"],
    )
    .with_stdin(probe_yaml(namespace))
}

/// What one probe showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// KEDA's webhook refused the probe: it validates.
    Refused,
    /// The API server admitted the probe (the webhook was not called or could not be reached: `Ignore`).
    Admitted,
    /// kubectl failed for another reason (the text).
    Failed(String),
}

/// Classify one probe's outcome.
pub fn classify(outcome: &Result<String, KindError>) -> ProbeResult {
    match outcome {
        Ok(_) => ProbeResult::Admitted,
        Err(KindError::CommandFailed { output, .. }) if output.contains(REFUSAL) => {
            ProbeResult::Refused
        }
        Err(e) => ProbeResult::Failed(e.to_string()),
    }
}

/// The webhooks did not start validating in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "KEDA's admission webhooks did not validate within {waited_secs} s: a server-side dry run of TriggerAuthentication \
     {PROBE_NAME} (podIdentity.identityId \"\") was never refused with \"{REFUSAL}\". Last probe: {last}. \
     See `kubectl --context {context} -n {namespace} logs deployment/keda-admission` and the operator's log (it \
     writes the webhook certificate and the CA bundle)"
)]
pub struct NotValidating {
    pub waited_secs: u64,
    pub last: String,
    pub context: String,
    pub namespace: String,
}

/// Probe once a second until KEDA's webhook refuses the probe, or `timeout` passes (the last probe named).
pub fn await_validating(
    context: &str,
    namespace: &str,
    timeout: Duration,
) -> Result<Duration, NotValidating> {
    let _span = tracing::info_span!("await_admission_webhooks", context, namespace).entered();
    let started = Instant::now();
    let mut last;
    loop {
        last = match classify(&probe_command(context, namespace).run()) {
            ProbeResult::Refused => return Ok(started.elapsed()),
            ProbeResult::Admitted => {
                "admitted (the webhook was not called, or its call failed and `failurePolicy: Ignore` let it \
                 through)"
                    .to_string()
            }
            ProbeResult::Failed(e) => e,
        };
        if started.elapsed() >= timeout {
            return Err(NotValidating {
                waited_secs: started.elapsed().as_secs(),
                last,
                context: context.to_string(),
                namespace: namespace.to_string(),
            });
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_sets_an_empty_identity_id_and_is_only_a_dry_run() {
        let y = probe_yaml("keda");
        let v: serde_json::Value = serde_norway::from_str(&y).unwrap();
        assert_eq!(v["kind"], "TriggerAuthentication");
        assert_eq!(v["metadata"]["namespace"], "keda");
        assert_eq!(v["spec"]["podIdentity"]["provider"], "azure-workload");
        assert_eq!(v["spec"]["podIdentity"]["identityId"], "");
        let c = probe_command("kind-x", "keda").to_string();
        assert!(c.contains("--dry-run=server"), "{c}");
    }

    #[test]
    fn only_kedas_refusal_counts_as_validating() {
        // What kubectl prints for a webhook denial (k8s.io/apiserver admission/plugin/webhook/errors:
        // `admission webhook "<name>" denied the request: <message>`), with KEDA's message.
        let refused = Err(KindError::CommandFailed {
            command: "kubectl apply".into(),
            status: "exit status: 1".into(),
            output: "Error from server (Forbidden): error when creating \"STDIN\": admission webhook \
                     \"vstriggerauthentication.kb.io\" denied the request: identityId of PodIdentity should \
                     not be empty. If it's set, identityId has to be different than \"\""
                .into(),
        });
        assert_eq!(classify(&refused), ProbeResult::Refused);
        assert_eq!(
            classify(&Ok(
                "triggerauthentication.keda.sh/x created (server dry run)".into()
            )),
            ProbeResult::Admitted
        );
        let other = Err(KindError::CommandFailed {
            command: "kubectl apply".into(),
            status: "exit status: 1".into(),
            output: "The connection to the server was refused".into(),
        });
        assert!(matches!(classify(&other), ProbeResult::Failed(t) if t.contains("refused")));
    }
}
