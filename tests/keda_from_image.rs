//! `--keda-source image` for real, against a registry on loopback.
//!
//! The test starts Debian's docker-registry (github.com/docker/distribution) on a free loopback port with its
//! storage in a recorded temp dir, pushes an image built from the module-built KEDA 2.15.0 operator in the layout
//! of KEDA's release image, and runs the seed scenario with `KEDA_HARNESS_REGISTRY` pointing there in place of
//! ghcr.io. The layout follows the tag's Dockerfile (kedacore/keda v2.15.0, `Dockerfile`):
//!
//! ```text
//! FROM gcr.io/distroless/static:nonroot
//! WORKDIR /
//! COPY --from=builder /workspace/bin/keda .
//! USER 65532:65532
//! ENTRYPOINT ["/keda", "--zap-log-level=info", "--zap-encoder=console"]
//! ```
//!
//! as a multi-arch index (the tag's Makefile: `BUILD_PLATFORMS ?= linux/amd64,linux/arm64`, pushed by
//! `docker buildx build --platform=...`): a base layer standing in for distroless (its nonroot user), the
//! operator layer with `keda` at the root, an OCI config with that user, entrypoint and working dir, and an
//! arm64 image beside it whose `keda` is not the operator, so taking the wrong platform would show.
//!
//! Then the registry's stored blob is corrupted and the harness must refuse the image with a digest mismatch
//! naming the reference, the expected and the actual digest — before anything runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keda_harness::catalog::Catalog;
use keda_harness::control_plane::build::{ETCD_VERSION, KUBERNETES_VERSION};
use keda_harness::images::{
    self, BinaryOrigin, ImageError, ImageOptions, IMAGE_CACHE_ENV, REGISTRY_OVERRIDE_ENV,
};
use keda_harness::keda::{operator_image, BuildOptions, KedaRelease, KedaSource};
use keda_harness::lifecycle::TrackedDir;
use keda_harness::matrix::{run, MatrixPlan};
use keda_harness::prereq::{self, Tier};
use keda_harness::process::ManagedChild;
use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::{
    ImageIndexEntry, OciImageIndex, Platform, IMAGE_LAYER_GZIP_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use oci_spec::image::{Arch, Os};
use sha2::{Digest, Sha256};

const VERSION: &str = "2.15.0";

/// A docker-registry process on 127.0.0.1 with filesystem storage in a recorded temp dir.
struct LocalRegistry {
    _child: ManagedChild,
    addr: String,
    storage: PathBuf,
    _dir: TrackedDir,
}

impl LocalRegistry {
    async fn start() -> LocalRegistry {
        let dir = TrackedDir::new("keda-harness-registry-").expect("registry temp dir");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let port = keda_harness::keda::free_loopback_port().unwrap();
        let addr = format!("127.0.0.1:{port}");
        // distribution's configuration reference (docs/configuration.md of docker/distribution 2.8): loopback
        // only, filesystem storage, no notifications, no upload purging (nothing runs behind the test's back).
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config_path);
        let child = ManagedChild::spawn("docker-registry", cmd, dir.path().join("registry.log"))
            .expect("docker-registry starts");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/v2/")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Some(status) = child.exit_status() {
                panic!(
                    "docker-registry exited ({status}): {}",
                    child.log_tail(4000)
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "docker-registry did not answer on {addr}: {}",
                child.log_tail(4000)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        LocalRegistry {
            _child: child,
            addr,
            storage,
            _dir: dir,
        }
    }

    /// distribution's filesystem layout: `docker/registry/v2/blobs/sha256/<first two>/<hex>/data`.
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A reproducible layer: every entry owned by root, mtime 0; gzip, as buildx pushes them.
fn layer(files: &[(&str, &[u8], u32)], dirs: &[&str]) -> (Vec<u8>, String) {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        for d in dirs {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_mtime(0);
            h.set_size(0);
            b.append_data(&mut h, d, &[][..]).unwrap();
        }
        for (path, data, mode) in files {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(*mode);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.finish().unwrap();
    }
    let diff_id = sha256(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// One release image as its publisher's Dockerfile lays it out.
struct ImageShape {
    repository: &'static str,
    tag: String,
    /// The binary's path from the image root.
    binary: &'static str,
    /// Folders the binary's layer creates above it.
    dirs: &'static [&'static str],
    user: &'static str,
    entrypoint: Option<&'static [&'static str]>,
    created_by: &'static str,
}

/// KEDA's operator image (the v2.15.0 Dockerfile quoted at the top).
fn keda_shape() -> ImageShape {
    ImageShape {
        repository: "kedacore/keda",
        tag: VERSION.into(),
        binary: "keda",
        dirs: &[],
        user: "65532:65532",
        entrypoint: Some(&["/keda", "--zap-log-level=info", "--zap-encoder=console"]),
        created_by: "COPY /workspace/bin/keda . # buildkit",
    }
}

/// registry.k8s.io/kube-apiserver (kubernetes build/server-image/kube-apiserver/Dockerfile:
/// `COPY --from=0 /set_cap_binary /usr/local/bin/${BINARY}` on the go-runner base, whose entrypoint is /go-runner).
fn kube_apiserver_shape() -> ImageShape {
    ImageShape {
        repository: "kube-apiserver",
        tag: KUBERNETES_VERSION.into(),
        binary: "usr/local/bin/kube-apiserver",
        dirs: &["usr", "usr/local", "usr/local/bin"],
        user: "",
        entrypoint: Some(&["/go-runner"]),
        created_by: "COPY /set_cap_binary /usr/local/bin/kube-apiserver # buildkit",
    }
}

/// registry.k8s.io/etcd (kubernetes cluster/images/etcd/Dockerfile: `COPY etcd* etcdctl* /usr/local/bin/`, no
/// entrypoint: kubeadm's manifest names the command).
fn etcd_shape() -> ImageShape {
    ImageShape {
        repository: "etcd",
        tag: format!("{}-0", ETCD_VERSION.trim_start_matches('v')),
        binary: "usr/local/bin/etcd",
        dirs: &["usr", "usr/local", "usr/local/bin"],
        user: "",
        entrypoint: None,
        created_by: "COPY etcd* etcdctl* /usr/local/bin/ # buildkit",
    }
}

/// Push one platform image (base layer + the binary's layer) and return (manifest digest, manifest size).
async fn push_platform_image(
    client: &oci_client::Client,
    registry: &str,
    shape: &ImageShape,
    arch: &str,
    binary: &[u8],
) -> (String, i64) {
    // Stand-in for gcr.io/distroless/static:nonroot: its nonroot user (uid/gid 65532) and home.
    let (base, base_diff) = layer(
        &[
            (
                "etc/passwd",
                b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
                0o644,
            ),
            ("etc/group", b"root:x:0:\nnonroot:x:65532:\n", 0o644),
        ],
        &["etc", "home", "home/nonroot", "tmp"],
    );
    let (app, app_diff) = layer(&[(shape.binary, binary, 0o755)], shape.dirs);
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": shape.user,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            "Entrypoint": shape.entrypoint,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [base_diff, app_diff]},
        "history": [
            {"created_by": "distroless static:nonroot (stand-in)"},
            {"created_by": shape.created_by},
        ],
    });
    let layers = vec![
        ImageLayer::new(base, IMAGE_LAYER_GZIP_MEDIA_TYPE.to_string(), None),
        ImageLayer::new(app, IMAGE_LAYER_GZIP_MEDIA_TYPE.to_string(), None),
    ];
    let config = Config::oci_v1(serde_json::to_vec(&config).unwrap(), None);
    let tag_ref = Reference::with_tag(
        registry.to_string(),
        shape.repository.into(),
        format!("{}-linux-{arch}", shape.tag),
    );
    client
        .push(&tag_ref, &layers, config, &RegistryAuth::Anonymous, None)
        .await
        .unwrap_or_else(|e| panic!("push {} {arch}: {e}", shape.repository));
    let (bytes, digest) = client
        .pull_manifest_raw(&tag_ref, &RegistryAuth::Anonymous, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .unwrap();
    (digest, bytes.len() as i64)
}

/// A release image's shape: an OCI index of linux/amd64 (the real binary) and linux/arm64 (not it), under
/// the release tag. Returns (index digest, amd64 manifest digest).
async fn push_release_image(registry: &str, shape: &ImageShape, binary: &[u8]) -> (String, String) {
    let reference = Reference::with_tag(
        registry.to_string(),
        shape.repository.into(),
        shape.tag.clone(),
    );
    let opts = ImageOptions {
        registry_override: None,
        cache_root: PathBuf::from("/nonexistent"),
        probe_timeout: Duration::from_secs(3),
        read_timeout: Duration::from_secs(60),
    };
    let client = images::client_for(&reference, &opts).unwrap();
    let (amd64, amd64_size) = push_platform_image(&client, registry, shape, "amd64", binary).await;
    let (arm64, arm64_size) = push_platform_image(
        &client,
        registry,
        shape,
        "arm64",
        b"#!/bin/false not the amd64 binary\n",
    )
    .await;
    let entry = |digest: String, size: i64, arch: Arch| ImageIndexEntry {
        media_type: OCI_IMAGE_MEDIA_TYPE.to_string(),
        digest,
        size,
        platform: Some(Platform {
            architecture: arch,
            os: Os::Linux,
            os_version: None,
            os_features: None,
            variant: None,
            features: None,
        }),
        annotations: None,
        artifact_type: None,
    };
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.to_string()),
        // arm64 first: a resolver that took the first entry would take the wrong one.
        manifests: vec![
            entry(arm64, arm64_size, Arch::ARM64),
            entry(amd64.clone(), amd64_size, Arch::Amd64),
        ],
        artifact_type: None,
        annotations: None,
    };
    client
        .push_manifest_list(&reference, &RegistryAuth::Anonymous, index)
        .await
        .expect("push the index");
    let digest = client
        .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
        .await
        .unwrap();
    (digest, amd64)
}

fn file_sha256(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap())
}

fn options(registry: &str, cache: &Path) -> ImageOptions {
    ImageOptions {
        registry_override: Some(registry.to_string()),
        cache_root: cache.to_path_buf(),
        probe_timeout: Duration::from_secs(3),
        read_timeout: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_runs_on_keda_and_the_control_plane_from_their_images_and_a_tampered_blob_is_refused()
{
    if !prereq::require_local_backend()
        || !prereq::require(Tier::Registry, || {
            prereq::on_path(
                "docker-registry",
                "apt-get install docker-registry (bash ci/prepare.sh does)",
            )
        })
    {
        return;
    }
    let catalog = Catalog::load().unwrap();
    let entry = catalog.get(VERSION).unwrap().clone();
    // The module-built operator is what the test image carries (built or cached like every local run).
    let module =
        KedaRelease::build(&entry, &BuildOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let operator = std::fs::read(module.operator_binary()).unwrap();

    let registry = LocalRegistry::start().await;
    let t = Instant::now();
    let (index_digest, amd64_digest) =
        push_release_image(&registry.addr, &keda_shape(), &operator).await;
    eprintln!(
        "pushed {}/kedacore/keda:{VERSION} ({index_digest}) in {:.1} s",
        registry.addr,
        t.elapsed().as_secs_f64()
    );

    // Pull, check and extract into an empty cache, then again from the cache (the figures for the README).
    let cache = TrackedDir::new("keda-harness-image-cache-").unwrap();
    let opts = options(&registry.addr, cache.path());
    let binary = operator_image(&entry);
    let cold = images::pull_binary(&binary, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let warm = images::pull_binary(&binary, &opts).await.unwrap();
    eprintln!(
        "pull + digest check + extract of the operator: cold {:.2} s ({} layer bytes), warm {:.3} s",
        cold.seconds, cold.downloaded_bytes, warm.seconds
    );
    let expected_origin = |cached: bool| BinaryOrigin::Image {
        reference: format!("{}/kedacore/keda:{VERSION}", registry.addr),
        digest: index_digest.clone(),
        manifest_digest: amd64_digest.clone(),
        cached,
    };
    assert_eq!(cold.origin, expected_origin(false));
    assert_eq!(warm.origin, expected_origin(true));
    assert_eq!(warm.downloaded_bytes, 0);
    // linux/amd64 was taken, and the bytes are the operator's.
    assert_eq!(file_sha256(&cold.path), sha256(&operator));

    // kube-apiserver and etcd from their (module-built, release-shaped) images too.
    let cp_module = tokio::task::spawn_blocking(keda_harness::control_plane::build::ensure_built)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let apiserver_bytes = std::fs::read(&cp_module.kube_apiserver).unwrap();
    let etcd_bytes = std::fs::read(&cp_module.etcd).unwrap();
    let t = Instant::now();
    let (apiserver_index, _) =
        push_release_image(&registry.addr, &kube_apiserver_shape(), &apiserver_bytes).await;
    push_release_image(&registry.addr, &etcd_shape(), &etcd_bytes).await;
    eprintln!(
        "pushed kube-apiserver and etcd in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let cp = keda_harness::control_plane::image::obtain(images::BinarySource::Image, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "pull + digest check + extract of kube-apiserver and etcd: cold {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(file_sha256(&cp.kube_apiserver), sha256(&apiserver_bytes));
    assert_eq!(file_sha256(&cp.etcd), sha256(&etcd_bytes));
    match &cp.kube_apiserver_origin {
        BinaryOrigin::Image {
            reference, digest, ..
        } => {
            assert_eq!(
                reference,
                &format!("{}/kube-apiserver:{KUBERNETES_VERSION}", registry.addr)
            );
            assert_eq!(digest, &apiserver_index);
        }
        other => panic!("kube-apiserver should come from its image: {other:?}"),
    }

    // `auto` takes the image when the registry answers, and builds when it does not (a closed loopback port).
    let auto = KedaRelease::obtain(&entry, KedaSource::Auto, &BuildOptions::default(), &opts)
        .await
        .unwrap();
    assert_eq!(auto.origin, expected_origin(true));
    let closed = format!(
        "127.0.0.1:{}",
        keda_harness::keda::free_loopback_port().unwrap()
    );
    let fallback = KedaRelease::obtain(
        &entry,
        KedaSource::Auto,
        &BuildOptions::default(),
        &options(&closed, cache.path()),
    )
    .await
    .unwrap();
    match &fallback.origin {
        BinaryOrigin::Module {
            auto_fallback: Some(why),
            ..
        } => assert!(why.contains(&closed), "{why}"),
        other => panic!("auto with a closed registry port should build, got {other:?}"),
    }

    // The seed scenario through `matrix`'s own code path with the image source.
    std::env::set_var(REGISTRY_OVERRIDE_ENV, &registry.addr);
    std::env::set_var(IMAGE_CACHE_ENV, cache.path());
    let plan = |control_plane_source| MatrixPlan {
        scenarios: vec!["seed".into()],
        versions: vec![VERSION.parse().unwrap()],
        parallel: false,
        report_dir: None,
        always_diagnose: false,
        keda_source: KedaSource::Image,
        control_plane_source,
        backend: keda_harness::backend::BackendKind::Local,
    };
    let outcome = run(&plan(images::BinarySource::Image))
        .await
        .expect("the run");
    eprintln!("{}", keda_harness::report::table(&outcome.verdicts));
    let v = &outcome.verdicts[0];
    assert!(
        v.passed,
        "seed on KEDA {VERSION} from its image failed: observed {}; failed checks: {:#?}",
        v.observed,
        v.checks.iter().filter(|c| !c.passed).collect::<Vec<_>>()
    );
    // The seed's expectation for 2.15.0 (scenarios/seed/scenario.yaml): 3 rows give 3 Jobs, 2 more give 5.
    assert_eq!(v.observed, "5 jobs");
    assert_eq!(v.keda_binary, Some(expected_origin(true)));
    let json = serde_json::to_value(v).unwrap();
    assert_eq!(json["keda_binary"]["source"], "image");
    assert_eq!(json["keda_binary"]["digest"], index_digest.as_str());

    // A catalog pin (`images.operator_digest`) that is not what the tag names is refused, cache or not.
    let mut pinned = binary.clone();
    pinned.pinned_digest = Some(sha256(b"another release"));
    match images::pull_binary(&pinned, &opts).await {
        Err(ImageError::DigestMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(Some(expected), pinned.pinned_digest);
            assert_eq!(actual, index_digest);
        }
        other => panic!("a wrong pin should be refused: {other:?}"),
    }

    // Tamper: flip one byte of the operator layer in the registry's storage (size unchanged).
    let amd64_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(registry.blob_path(&amd64_digest)).unwrap()).unwrap();
    let layer_digest = amd64_manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = registry.blob_path(&layer_digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let tampered_digest = sha256(&bytes);

    let fresh = TrackedDir::new("keda-harness-image-cache-").unwrap();
    let err = images::pull_binary(&binary, &options(&registry.addr, fresh.path()))
        .await
        .expect_err("a tampered blob must be refused");
    match &err {
        ImageError::DigestMismatch {
            reference,
            expected,
            actual,
            ..
        } => {
            assert_eq!(
                reference,
                &format!("{}/kedacore/keda:{VERSION}", registry.addr)
            );
            assert_eq!(expected, &layer_digest);
            assert_eq!(actual, &tampered_digest);
        }
        other => panic!("expected a digest mismatch, got: {other}"),
    }
    let text = err.to_string();
    eprintln!("the harness refused the tampered image: {text}");
    assert!(
        text.contains(&layer_digest) && text.contains(&tampered_digest),
        "{text}"
    );
    // Nothing of the tampered image reached the cache.
    let cached_files: Vec<_> = walk(fresh.path())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "keda"))
        .collect();
    assert!(cached_files.is_empty(), "{cached_files:?}");

    // And the run refuses before anything starts.
    std::env::set_var(IMAGE_CACHE_ENV, fresh.path());
    let err = match run(&plan(images::BinarySource::Module)).await {
        Ok(o) => panic!(
            "the run should refuse a tampered image, got {:?}",
            o.verdicts
        ),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("digest mismatch") && err.contains(&tampered_digest),
        "{err}"
    );
    assert_eq!(
        keda_harness::process::registered_children().len(),
        1,
        "only the registry runs"
    );
    std::env::remove_var(REGISTRY_OVERRIDE_ENV);
    std::env::remove_var(IMAGE_CACHE_ENV);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
