//! kube-apiserver and etcd from their release images on registry.k8s.io, instead of the Go module build.
//!
//! - kube-apiserver: `registry.k8s.io/kube-apiserver:v1.35.4`, binary `/usr/local/bin/kube-apiserver`
//!   (kubernetes `build/server-image/kube-apiserver/Dockerfile`: `COPY --from=0 /set_cap_binary
//!   /usr/local/bin/${BINARY}`; the file capability it sets is not carried over, the harness binds high ports).
//! - etcd: `registry.k8s.io/etcd:3.6.5-0`, binary `/usr/local/bin/etcd` (kubernetes `cluster/images/etcd/Dockerfile`:
//!   `COPY etcd* etcdctl* /usr/local/bin/`), the etcd version kubeadm of that Kubernetes release runs. The
//!   module build's `cmd/etcd` is etcd's own entry point (`etcdmain.Main(os.Args)`), the same main the released
//!   binary has, so the flags [`super::LocalControlPlane`] passes mean the same to both.
//!
//! Both are multi-arch indexes; linux/amd64 is taken. `auto` takes the images when the registry answers within
//! a few seconds, else builds; a digest mismatch fails instead.

use crate::images::{self, BinaryOrigin, BinarySource, ImageBinary, ImageError, ImageOptions};

use super::build::{self, BuildError, ControlPlaneBinaries, KUBERNETES_VERSION};

/// The kube-apiserver release image of [`KUBERNETES_VERSION`].
pub fn kube_apiserver_image() -> ImageBinary {
    ImageBinary {
        reference: format!("registry.k8s.io/kube-apiserver:{KUBERNETES_VERSION}"),
        pinned_digest: None,
        path: "/usr/local/bin/kube-apiserver".into(),
    }
}

/// The etcd release image of the etcd version [`KUBERNETES_VERSION`] pins (`3.6.5-0`: kubeadm's image tag for
/// etcd v3.6.5).
pub fn etcd_image() -> ImageBinary {
    ImageBinary {
        reference: format!(
            "registry.k8s.io/etcd:{}-0",
            build::ETCD_VERSION.trim_start_matches('v')
        ),
        pinned_digest: None,
        path: "/usr/local/bin/etcd".into(),
    }
}

/// Why the control-plane binaries could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneSourceError {
    #[error("the control plane from its release images: {0}")]
    Image(#[from] ImageError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("the control-plane build task panicked or was cancelled: {0}")]
    Task(String),
}

/// kube-apiserver and etcd from `source` (see the module docs).
pub async fn obtain(
    source: BinarySource,
    opts: &ImageOptions,
) -> Result<ControlPlaneBinaries, ControlPlaneSourceError> {
    match source {
        BinarySource::Module => build_blocking(None).await,
        BinarySource::Image => from_images(opts).await,
        BinarySource::Auto => {
            if images::is_cached(&kube_apiserver_image(), opts)
                && images::is_cached(&etcd_image(), opts)
            {
                return from_images(opts).await;
            }
            let why = match images::probe(&kube_apiserver_image(), opts).await {
                Ok(()) => match from_images(opts).await {
                    Ok(b) => return Ok(b),
                    Err(ControlPlaneSourceError::Image(e)) if e.is_unavailable() => e.to_string(),
                    Err(e) => return Err(e),
                },
                Err(why) => why,
            };
            tracing::info!(%why, "auto: building the control plane from its Go module");
            build_blocking(Some(why)).await
        }
    }
}

async fn build_blocking(
    auto_fallback: Option<String>,
) -> Result<ControlPlaneBinaries, ControlPlaneSourceError> {
    let mut bins = tokio::task::spawn_blocking(build::ensure_built)
        .await
        .map_err(|e| ControlPlaneSourceError::Task(e.to_string()))??;
    for origin in [&mut bins.kube_apiserver_origin, &mut bins.etcd_origin] {
        if let BinaryOrigin::Module {
            auto_fallback: slot,
            ..
        } = origin
        {
            slot.clone_from(&auto_fallback);
        }
    }
    Ok(bins)
}

async fn from_images(opts: &ImageOptions) -> Result<ControlPlaneBinaries, ControlPlaneSourceError> {
    let apiserver = images::pull_binary(&kube_apiserver_image(), opts).await?;
    let etcd = images::pull_binary(&etcd_image(), opts).await?;
    Ok(ControlPlaneBinaries {
        kube_apiserver: apiserver.path,
        etcd: etcd.path,
        kubernetes_version: KUBERNETES_VERSION.to_string(),
        kube_apiserver_origin: apiserver.origin,
        etcd_origin: etcd.origin,
    })
}
