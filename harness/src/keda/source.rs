//! Where the operator binary comes from: the Go module build, the release image, or whichever answers.
//!
//! The release image (`ghcr.io/kedacore/keda:<version>`, linux/amd64) holds the operator binary customers run,
//! built with KEDA's own Go version and flags (CGO off, `-mod=vendor`): taking it is faster and more faithful
//! than compiling the module. The CRDs and RBAC manifests still come from the tag's module source (one
//! `go mod download` of the KEDA module, no compile), so both sources install the same objects.

use std::time::Instant;

use super::{BuildOptions, KedaError, KedaRelease};
use crate::catalog::{CatalogEntry, OPERATOR_IMAGE_BINARY};
use crate::images::{self, BinaryOrigin, ImageBinary, ImageOptions};

/// The operator's source, from `--keda-source` on `run` and `matrix` or [`KEDA_SOURCE_ENV`].
pub use crate::images::BinarySource as KedaSource;

/// Where `source` takes `entry`'s operator from, for a person (progress lines, `--plan`).
pub fn describe_source(source: KedaSource, entry: &CatalogEntry) -> String {
    match source {
        KedaSource::Module => format!("github.com/kedacore/keda/v2@{}", entry.tag),
        KedaSource::Image => entry.images.operator.clone(),
        KedaSource::Auto => format!(
            "{} if its registry answers, else github.com/kedacore/keda/v2@{}",
            entry.images.operator, entry.tag
        ),
    }
}

/// Environment variable that sets `--keda-source` (`image`, `module`, `auto`).
pub const KEDA_SOURCE_ENV: &str = "KEDA_HARNESS_KEDA_SOURCE";

impl KedaRelease {
    /// The operator of `entry` from `source`: a module build ([`KedaRelease::build`]), the release image
    /// ([`KedaRelease::from_image`]), or for `auto` the image when its registry answers within
    /// `images.probe_timeout`, else the build — the origin says which and why.
    pub async fn obtain(
        entry: &CatalogEntry,
        source: KedaSource,
        build: &BuildOptions,
        images: &ImageOptions,
    ) -> Result<KedaRelease, KedaError> {
        match source {
            KedaSource::Module => Self::build_blocking(entry, build).await,
            KedaSource::Image => Self::from_image(entry, build, images).await,
            KedaSource::Auto => {
                let binary = operator_image(entry);
                if images::is_cached(&binary, images) {
                    return Self::from_image(entry, build, images).await;
                }
                let reason = match images::probe(&binary, images).await {
                    Ok(()) => match Self::from_image(entry, build, images).await {
                        Ok(release) => return Ok(release),
                        Err(KedaError::Image { source, .. }) if source.is_unavailable() => {
                            source.to_string()
                        }
                        Err(e) => return Err(e),
                    },
                    Err(why) => why,
                };
                tracing::info!(version = %entry.version, %reason, "auto: building from the Go module");
                let mut release = Self::build_blocking(entry, build).await?;
                release.origin = BinaryOrigin::Module {
                    cached: release.from_cache,
                    auto_fallback: Some(reason),
                };
                Ok(release)
            }
        }
    }

    async fn build_blocking(
        entry: &CatalogEntry,
        build: &BuildOptions,
    ) -> Result<KedaRelease, KedaError> {
        let (entry, build) = (entry.clone(), build.clone());
        tokio::task::spawn_blocking(move || KedaRelease::build(&entry, &build))
            .await
            .map_err(|e| KedaError::Task {
                what: "KEDA build".into(),
                message: e.to_string(),
            })?
    }

    /// The operator binary out of `entry`'s release image (pinned to `images.operator_digest` when the catalog
    /// has one), digest-checked and cached; the generated module folder is prepared for the CRDs.
    pub async fn from_image(
        entry: &CatalogEntry,
        build: &BuildOptions,
        images: &ImageOptions,
    ) -> Result<KedaRelease, KedaError> {
        let started = Instant::now();
        let pulled = images::pull_binary(&operator_image(entry), images)
            .await
            .map_err(|e| KedaError::Image {
                version: entry.version.to_string(),
                source: Box::new(e),
            })?;
        let (module_dir, go_env) = {
            let (entry, build) = (entry.clone(), build.clone());
            tokio::task::spawn_blocking(move || KedaRelease::prepare_module_dir(&entry, &build))
                .await
                .map_err(|e| KedaError::Task {
                    what: "preparing the module folder".into(),
                    message: e.to_string(),
                })??
        };
        let from_cache = pulled.downloaded_bytes == 0;
        Ok(KedaRelease {
            entry: entry.clone(),
            binary: pulled.path,
            module_dir,
            go: build.go.clone(),
            go_env,
            from_cache,
            build_secs: started.elapsed().as_secs_f64(),
            origin: pulled.origin,
            progress: build.progress,
        })
    }
}

/// The operator binary of `entry`'s release image.
pub fn operator_image(entry: &CatalogEntry) -> ImageBinary {
    ImageBinary {
        reference: entry.images.operator.clone(),
        pinned_digest: entry.images.operator_digest.clone(),
        path: OPERATOR_IMAGE_BINARY.to_string(),
    }
}
