//! Images of KEDA's programs for the kind backend, built on this machine from the module builds the local
//! backend runs (no registry holds them here, and a release image would be another binary than the one the
//! local backend judged). Laid out as KEDA's own Dockerfiles lay them out (`/keda`, `/keda-adapter`,
//! `/keda-admission-webhooks`, user 65532, the distroless `nonroot` user), on the offline Debian base
//! (`bash ci/images/debian-base.sh`; KEDA's distroless base is in a registry). An image is rebuilt only when
//! its binary changed: the binary's SHA-256 is its label.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::tools::{Tool, ToolCommand};
use super::KindError;

/// The base image (`bash ci/images/debian-base.sh` builds it).
pub const DEFAULT_BASE_IMAGE: &str = "keda-harness/debian:bookworm-minbase";
/// Environment variable naming another base image.
pub const BASE_IMAGE_ENV: &str = "KEDA_HARNESS_KEDA_BASE_IMAGE";
/// The label holding the binary's SHA-256.
const BINARY_LABEL: &str = "keda-harness.binary-sha256";

pub use crate::keda::KedaProgram;

impl KedaProgram {
    /// Where KEDA's Dockerfiles put the binary (and config/'s Deployments run it from): `Dockerfile`'s
    /// `/keda`, `Dockerfile.adapter`'s `/keda-adapter`, `Dockerfile.webhooks`' `/keda-admission-webhooks`.
    fn path_in_image(self) -> &'static str {
        match self {
            KedaProgram::Operator => "/keda",
            KedaProgram::MetricsAdapter => "/keda-adapter",
            KedaProgram::AdmissionWebhooks => "/keda-admission-webhooks",
        }
    }

    /// `keda-harness/keda:2.15.0`, `keda-harness/keda-metrics-apiserver:2.15.0`,
    /// `keda-harness/keda-admission-webhooks:2.15.0` (KEDA's image names under our prefix).
    pub fn image(self, version: &str) -> String {
        match self {
            KedaProgram::Operator => format!("keda-harness/keda:{version}"),
            KedaProgram::MetricsAdapter => format!("keda-harness/keda-metrics-apiserver:{version}"),
            KedaProgram::AdmissionWebhooks => {
                format!("keda-harness/keda-admission-webhooks:{version}")
            }
        }
    }
}

/// The base image: [`BASE_IMAGE_ENV`], else [`DEFAULT_BASE_IMAGE`].
pub fn base_image() -> String {
    std::env::var(BASE_IMAGE_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_BASE_IMAGE.to_string())
}

/// The Dockerfile of `program` on `base`.
pub fn dockerfile(program: KedaProgram, base: &str) -> String {
    let path = program.path_in_image();
    format!("FROM {base}\nCOPY binary {path}\nUSER 65532:65532\nENTRYPOINT [\"{path}\"]\n")
}

/// Build `image` of `program` from `binary` unless an image with that binary exists; `Ok(true)` when it built.
pub fn ensure_image(program: KedaProgram, binary: &Path, image: &str) -> Result<bool, KindError> {
    let sha = sha256_file(binary)?;
    let current = ToolCommand::new(
        Tool::Docker,
        [
            "image",
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{BINARY_LABEL}\"}}}}"),
            image,
        ],
    )
    .run()
    .ok();
    if current.as_deref().map(str::trim) == Some(sha.as_str()) {
        return Ok(false);
    }
    let base = base_image();
    super::check_image_present(
        &base,
        BASE_IMAGE_ENV,
        "build it with `bash ci/images/debian-base.sh`",
    )?;
    let context = tempfile::Builder::new()
        .prefix("keda-harness-keda-image-")
        .tempdir()
        .map_err(|source| KindError::Spawn {
            command: "making a docker build context".into(),
            source,
        })?;
    // A hard link where the file system allows one: the binaries are ~100 MB.
    let dest = context.path().join("binary");
    if std::fs::hard_link(binary, &dest).is_err() {
        std::fs::copy(binary, &dest).map_err(|source| KindError::Spawn {
            command: format!("copying {} into the build context", binary.display()),
            source,
        })?;
    }
    ToolCommand::new(
        Tool::Docker,
        [
            "build".to_string(),
            "--quiet".to_string(),
            "--label".to_string(),
            format!("{BINARY_LABEL}={sha}"),
            "--tag".to_string(),
            image.to_string(),
            "--file".to_string(),
            "-".to_string(),
            context.path().display().to_string(),
        ],
    )
    // The classic builder: Debian's dockerd has no BuildKit front end here, and it needs no image of its own.
    .with_env("DOCKER_BUILDKIT", "0")
    .with_stdin(dockerfile(program, &base))
    .run()?;
    Ok(true)
}

fn sha256_file(path: &Path) -> Result<String, KindError> {
    let io = |source| KindError::Spawn {
        command: format!("reading {}", path.display()),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_follow_kedas_layout() {
        // KEDA's Dockerfile: `COPY --from=builder /workspace/bin/keda /keda`, `USER 65532:65532`.
        let d = dockerfile(KedaProgram::Operator, "base:1");
        assert!(d.starts_with("FROM base:1\n"), "{d}");
        assert!(d.contains("COPY binary /keda\n"), "{d}");
        assert!(d.contains("USER 65532:65532"), "{d}");
        assert_eq!(
            KedaProgram::MetricsAdapter.image("2.15.0"),
            "keda-harness/keda-metrics-apiserver:2.15.0"
        );
        // Dockerfile.webhooks: `COPY --from=builder /workspace/bin/keda-admission-webhooks .` (WORKDIR /), and
        // config/webhooks/webhooks.yaml runs `command: [/keda-admission-webhooks]`.
        let d = dockerfile(KedaProgram::AdmissionWebhooks, "base:1");
        assert!(d.contains("COPY binary /keda-admission-webhooks\n"), "{d}");
    }
}
