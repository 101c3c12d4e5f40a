//! A kind cluster's DNS answers cluster names and no outside name, and sends nothing off this machine.
//!
//! The cluster is the kind backend's own: the node image and kind config it would choose here, the CoreDNS
//! objects it applies first (`cluster_dns::objects`). Order matters, so no check of "outside names are closed"
//! can itself leak: (1) the CoreDNS that runs is the only one (kubeadm's addon phase was skipped) and its live
//! Corefile holds no forwarding directive — so an outside query has nowhere to go but CoreDNS's own answer;
//! (2) inside a pod, `/etc/resolv.conf` names only the cluster DNS address; (3) a cluster name resolves there
//! (the check below it is not just broken DNS); (4) only then is an outside name asked for, and it fails.
//!
//! Gate: Tier::Kind, as kind_live.rs. In its own test binary: cargo runs binaries one after another, so this
//! cluster never overlaps kind_live's cells (2 cores).

mod kind_support;

use std::process::Command;

use keda_harness::backend::kind::cluster_dns::{self, corefile_forwards, CLUSTER_DNS_IP};
use keda_harness::backend::kind::mock_aad::DEFAULT_IMAGE;
use keda_harness::backend::kind::{node_image, to_yaml_stream, KindCluster};
use keda_harness::lifecycle::{self, Resource};
use keda_harness::prereq::{require, Tier};
use kind_support::kind_ready;

/// Deletes the cluster when the test ends, passed or not; a killed test leaves it to the next run's reaper.
struct Cluster(KindCluster, u64);

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.0.delete().is_ok() {
            lifecycle::forget(self.1);
        }
    }
}

/// `kubectl --context <ctx> args...`: (exit success, stdout, stderr).
fn kubectl(context: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg("--context")
        .arg(context)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(context: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = kubectl(context, args, None);
    assert!(success, "kubectl {args:?} failed:\n{stderr}");
    stdout
}

#[test]
fn the_clusters_dns_answers_cluster_names_and_no_outside_name() {
    if !require(Tier::Kind, kind_ready) {
        return;
    }
    let choice = node_image::choose_here();
    let name = format!("kh-dns-{}", std::process::id());
    let record = lifecycle::record(Resource::KindCluster { name: name.clone() }).unwrap();
    let cluster = Cluster(
        KindCluster::new(&name)
            .with_node_image(choice.image.clone())
            .with_config(&choice.config),
        record,
    );
    cluster.0.create().expect("kind create cluster");
    let ctx = cluster.0.kube_context();
    cluster.0.load_image(DEFAULT_IMAGE).expect("kind load");
    // kubeadm's own CoreDNS never started (the configs skip its addon phase): it would have probed its
    // forward at start, before any check here could run.
    // The cluster's DNS Deployments (kubeadm's and ours carry the same label).
    let dns_deployments = || {
        ok(
            &ctx,
            &[
                "-n",
                "kube-system",
                "get",
                "deployments",
                "-l",
                "k8s-app=kube-dns",
                "-o",
                "name",
            ],
        )
    };
    let kubeadm_dns = dns_deployments();
    assert_eq!(kubeadm_dns.trim(), "", "kubeadm deployed CoreDNS");
    let objects = to_yaml_stream(&cluster_dns::objects()).unwrap();
    let (applied, _, stderr) =
        kubectl(&ctx, &["apply", "--server-side", "-f", "-"], Some(&objects));
    assert!(applied, "applying the cluster DNS objects: {stderr}");
    ok(
        &ctx,
        &[
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            "--timeout=120s",
        ],
    );

    // (1) One DNS server in the cluster, ours, and the Corefile it reads forwards nothing.
    assert_eq!(dns_deployments().trim(), "deployment.apps/coredns");
    let corefile = ok(
        &ctx,
        &[
            "-n",
            "kube-system",
            "get",
            "configmap",
            "coredns",
            "-o",
            "jsonpath={.data.Corefile}",
        ],
    );
    assert!(corefile.contains("kubernetes cluster.local"), "{corefile}");
    assert_eq!(
        corefile_forwards(&corefile),
        None,
        "live Corefile:\n{corefile}"
    );

    // A pod like the scenario's (ClusterFirst DNS), from an image already on the node.
    ok(
        &ctx,
        &[
            "run",
            "dns-probe",
            "--image",
            DEFAULT_IMAGE,
            "--image-pull-policy=Never",
            "--restart=Never",
            "--command",
            "--",
            "sleep",
            "600",
        ],
    );
    ok(
        &ctx,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/dns-probe",
            "--timeout=120s",
        ],
    );

    // (2) Inside the pod's namespace the only resolver is the cluster's DNS.
    let resolv = ok(
        &ctx,
        &["exec", "dns-probe", "--", "cat", "/etc/resolv.conf"],
    );
    let nameservers: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(str::trim)
        .collect();
    assert_eq!(nameservers, [CLUSTER_DNS_IP], "{resolv}");

    // `getent hosts NAME` in the pod: (found, stdout).
    let lookup = |name: &str| {
        let (found, stdout, _) = kubectl(
            &ctx,
            &["exec", "dns-probe", "--", "getent", "hosts", name],
            None,
        );
        (found, stdout)
    };

    // (3) Cluster names resolve: the Service every cluster has (10.96.0.1, the first address of the range
    // kind-config pins).
    let (found, inside) = lookup("kubernetes.default.svc.cluster.local");
    assert!(found && inside.starts_with("10.96.0.1 "), "{inside}");

    // (4) An outside name does not: Entra's host, which only hostAliases may point anywhere.
    let (resolved, stdout) = lookup("login.microsoftonline.com");
    assert!(
        !resolved && stdout.trim().is_empty(),
        "an outside name resolved: {stdout}"
    );
}
