//! The kind cluster's DNS, closed to the outside: CoreDNS that answers cluster names and nothing else.
//!
//! Why the harness deploys CoreDNS itself: kubeadm's CoreDNS addon
//! (k8s.io/kubernetes v1.35.4, cmd/kubeadm/app/phases/addons/dns/manifests.go, `CoreDNSConfigMap`) forwards every
//! name outside `cluster.local` to the node's resolver (`forward . /etc/resolv.conf`), and its `loop` plugin sends
//! a probe query through that forward as soon as CoreDNS starts. On a kind node that resolver is Docker's, which
//! asks the host's — a packet off this machine before any scenario runs. The harness never contacts anything
//! outside the run, so both kind configs (kind-config/*.yaml) skip kubeadm's `addon/coredns` phase and the
//! harness applies the objects below first: the addon's objects with a Corefile that has no `forward` (and so
//! no `loop`, whose only job is to catch forwarding loops). An outside name gets SERVFAIL from CoreDNS itself.
//! Scenario pods reach Entra and PostgreSQL through `hostAliases`, not DNS.

use serde_json::{json, Value};

/// The ClusterIP kubelet's `clusterDNS` names: kubeadm takes the tenth address of the service range
/// (kind-config/*.yaml pin 10.96.0.0/16), and its addon phase, skipped here, would have created the Service.
pub const CLUSTER_DNS_IP: &str = "10.96.0.10";

/// CoreDNS at the version kubeadm v1.35 deploys (cmd/kubeadm/app/constants/constants.go, `CoreDNSVersion`):
/// kind's node images and the offline one (ci/images/kind-node.sh) carry it, so it is never pulled.
pub const COREDNS_IMAGE: &str = "registry.k8s.io/coredns/coredns:v1.13.1";

/// kubeadm's Corefile without `forward` and `loop` (module docs). Every directive kept is kubeadm's.
pub const COREFILE: &str = r".:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    reload
    loadbalance
}
";

/// The directives that would send a query out of the cluster; [`corefile_forwards`] looks for them.
const FORWARDING_DIRECTIVES: [&str; 3] = ["forward", "proxy", "grpc"];

/// The first directive of `corefile` that sends queries elsewhere, if any (a line whose first word is one of
/// `forward`, `proxy`, `grpc`). Tests read the live ConfigMap with it before they ask for an outside name.
pub fn corefile_forwards(corefile: &str) -> Option<String> {
    corefile
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .find(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|word| FORWARDING_DIRECTIVES.contains(&word))
        })
        .map(str::to_string)
}

/// The objects kubeadm's addon phase would have created, with [`COREFILE`] (applied before anything else).
pub fn objects() -> Vec<Value> {
    let labels = json!({"k8s-app": "kube-dns"});
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"}
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]}
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": COREFILE}
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "priorityClassName": "system-cluster-critical",
                        "serviceAccountName": "coredns",
                        "tolerations": [
                            {"key": "CriticalAddonsOnly", "operator": "Exists"},
                            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
                        ],
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        // The node's resolver is never read: the Corefile forwards nothing.
                        "dnsPolicy": "Default",
                        "containers": [{
                            "name": "coredns",
                            "image": COREDNS_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "resources": {"limits": {"memory": "170Mi"},
                                          "requests": {"cpu": "100m", "memory": "70Mi"}},
                            "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns",
                                              "readOnly": true}],
                            "ports": [
                                {"containerPort": 53, "name": "dns", "protocol": "UDP"},
                                {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                                {"containerPort": 9153, "name": "metrics", "protocol": "TCP"},
                                {"containerPort": 8080, "name": "liveness-probe", "protocol": "TCP"},
                                {"containerPort": 8181, "name": "readiness-probe", "protocol": "TCP"}
                            ],
                            "livenessProbe": {
                                "httpGet": {"path": "/health", "port": "liveness-probe", "scheme": "HTTP"},
                                "initialDelaySeconds": 60, "timeoutSeconds": 5, "failureThreshold": 5
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/ready", "port": "readiness-probe", "scheme": "HTTP"}
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                                "readOnlyRootFilesystem": true
                            }
                        }],
                        "volumes": [{
                            "name": "config-volume",
                            "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}
                        }]
                    }
                }
            }
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                                    "kubernetes.io/name": "CoreDNS"}},
            "spec": {
                "clusterIP": CLUSTER_DNS_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}
                ]
            }
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corefile_sends_nothing_out_and_still_serves_the_cluster_zone() {
        assert_eq!(corefile_forwards(COREFILE), None);
        assert!(COREFILE.contains("kubernetes cluster.local"));
    }

    #[test]
    fn kubeadms_own_forward_line_is_found() {
        // The line kubeadm v1.35.4 writes (manifests.go, CoreDNSConfigMap), and a commented-out one that is not.
        let kubeadm =
            ".:53 {\n    # forward . 8.8.8.8\n    forward . /etc/resolv.conf {\n    }\n}\n";
        assert_eq!(
            corefile_forwards(kubeadm).as_deref(),
            Some("forward . /etc/resolv.conf {")
        );
    }

    #[test]
    fn the_configmap_carries_the_corefile_the_service_the_kubelets_address() {
        let objects = objects();
        let find = |kind: &str| objects.iter().find(|o| o["kind"] == kind).unwrap();
        assert_eq!(find("ConfigMap")["data"]["Corefile"], COREFILE);
        assert_eq!(find("Service")["spec"]["clusterIP"], CLUSTER_DNS_IP);
    }
}
