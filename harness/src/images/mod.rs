//! Release binaries out of their OCI images: the KEDA operator from `ghcr.io/kedacore/keda:<version>`,
//! kube-apiserver and etcd from `registry.k8s.io`.
//!
//! [`pull_binary`] asks the registry (OCI distribution API, through the `oci-client` crate, anonymous) for the
//! tag's manifest, picks `linux/amd64` from a multi-arch index, and fetches layers from the top one down until
//! one holds the wanted file ([`extract`]). Every manifest and blob is checked against its sha256 digest here,
//! beside whatever the crate checks: a mismatch is [`ImageError::DigestMismatch`], naming the reference, the
//! expected and the actual digest, and nothing is written to the cache or run. The binary is cached by the
//! platform manifest's digest under `<target>/keda-harness/images/`; which digest a tag named is remembered
//! there too, so a warm run asks no registry at all.
//!
//! `KEDA_HARNESS_REGISTRY=HOST:PORT` sends every pull to that registry instead of the reference's own host
//! (`ghcr.io/kedacore/keda:2.15.0` is pulled as `HOST:PORT/kedacore/keda:2.15.0`): a mirror, or in the tests a
//! loopback registry. Plain HTTP is used only for a loopback host; every other registry is HTTPS.

mod extract;

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::{
    OciDescriptor, OciImageManifest, OciManifest, IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use extract::{find_in_layer, normalize, Lookup, MAX_LINK_HOPS};

/// Environment variable naming a registry (`HOST:PORT`) that serves every image instead of its own host.
pub const REGISTRY_OVERRIDE_ENV: &str = "KEDA_HARNESS_REGISTRY";
/// Environment variable naming the image cache folder (default `<target>/keda-harness/images`).
pub const IMAGE_CACHE_ENV: &str = "KEDA_HARNESS_IMAGE_CACHE";
/// The platform taken from a multi-arch index: the one the local backend runs.
pub const PLATFORM: &str = "linux/amd64";

/// A manifest larger than this is no image manifest.
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// A config blob larger than this is refused.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// A layer blob larger than this is refused before download (the KEDA layer is tens of MB).
const MAX_LAYER_BYTES: u64 = 2 << 30;
/// The wanted binary may be no larger (kube-apiserver is ~100 MB).
const MAX_BINARY_BYTES: u64 = 512 << 20;

/// Where a binary comes from, as the user chooses it (`--keda-source`, `KEDA_HARNESS_KEDA_SOURCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BinarySource {
    /// The release image's binary, pulled from its registry (fails when the registry does not answer).
    Image,
    /// Built from the Go module at the tag (minutes when cold; no registry needed).
    #[default]
    Module,
    /// The image when its registry answers within a few seconds, else the Go module build (it says which and
    /// why). A digest mismatch is never a reason to fall back: it fails.
    Auto,
}

impl BinarySource {
    pub fn as_str(self) -> &'static str {
        match self {
            BinarySource::Image => "image",
            BinarySource::Module => "module",
            BinarySource::Auto => "auto",
        }
    }
}

impl fmt::Display for BinarySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BinarySource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "image" => Ok(BinarySource::Image),
            "module" => Ok(BinarySource::Module),
            "auto" => Ok(BinarySource::Auto),
            other => Err(format!(
                "`{other}` is no binary source: use image, module or auto"
            )),
        }
    }
}

/// Where the binary that ran came from (in the verdict).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum BinaryOrigin {
    /// Built from the Go module.
    Module {
        /// Reused from the build cache.
        cached: bool,
        /// Why `auto` did not take the image, when it was `auto`.
        #[serde(skip_serializing_if = "Option::is_none")]
        auto_fallback: Option<String>,
    },
    /// Extracted from a release image.
    Image {
        /// The reference pulled (with the registry override applied).
        reference: String,
        /// The digest the tag named (the multi-arch index's, for a multi-arch image).
        digest: String,
        /// The `linux/amd64` image manifest's digest (the cache key).
        manifest_digest: String,
        /// Taken from the image cache without a download.
        cached: bool,
    },
}

impl fmt::Display for BinaryOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BinaryOrigin::Module {
                cached,
                auto_fallback,
            } => {
                write!(f, "module build{}", if *cached { " (cached)" } else { "" })?;
                if let Some(why) = auto_fallback {
                    write!(f, "; auto fell back: {why}")?;
                }
                Ok(())
            }
            BinaryOrigin::Image {
                reference,
                digest,
                cached,
                ..
            } => write!(
                f,
                "image {reference}@{digest}{}",
                if *cached { " (cached)" } else { "" }
            ),
        }
    }
}

/// Why an image could not give its binary.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{REGISTRY_OVERRIDE_ENV}=`{value}` is not a registry address: use HOST or HOST:PORT (e.g. 127.0.0.1:5000)")]
    BadOverride { value: String },
    #[error("image reference `{reference}`: {message}")]
    BadReference { reference: String, message: String },
    #[error("{what} of {reference}: the registry did not answer as expected: {message}")]
    Registry {
        reference: String,
        what: String,
        message: String,
    },
    #[error(
        "digest mismatch for {what} of {reference}: expected {expected}, got {actual}. The registry (or \
         something between it and this machine) served other bytes than the digest names; nothing was cached or \
         run. Pull again from a registry you trust, or use --keda-source module"
    )]
    DigestMismatch {
        reference: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{reference}: {message}")]
    BadImage { reference: String, message: String },
    #[error("{reference}: layer {layer}: {message}")]
    BadLayer {
        reference: String,
        layer: String,
        message: String,
    },
    #[error("{reference}: `/{path}` is not in the image ({why})")]
    NotInImage {
        reference: String,
        path: String,
        why: String,
    },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ImageError {
    /// True when the registry could not be asked (unreachable, refused, timed out, no such tag): `auto` may
    /// then build from the module. Content that does not match its digest, or a broken image, is never that.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ImageError::Registry { .. })
    }
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// How pulls go.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// `HOST[:PORT]` serving every image instead of its own host ([`REGISTRY_OVERRIDE_ENV`]).
    pub registry_override: Option<String>,
    /// Where binaries and tag digests are cached.
    pub cache_root: PathBuf,
    /// TCP connect timeout; also how long `auto` waits for the registry's first answer.
    pub probe_timeout: Duration,
    /// Read timeout of each request (a stalled download fails instead of hanging).
    pub read_timeout: Duration,
}

impl ImageOptions {
    /// From [`REGISTRY_OVERRIDE_ENV`] and [`IMAGE_CACHE_ENV`]; default cache `<target>/keda-harness/images`.
    pub fn from_env() -> Result<Self, ImageError> {
        let registry_override = match std::env::var(REGISTRY_OVERRIDE_ENV) {
            Ok(v) if !v.trim().is_empty() => Some(check_registry_host(v.trim())?),
            _ => None,
        };
        let cache_root = std::env::var_os(IMAGE_CACHE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                crate::keda::workspace_target_dir()
                    .join("keda-harness")
                    .join("images")
            });
        Ok(Self {
            registry_override,
            cache_root,
            probe_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(60),
        })
    }
}

/// `HOST` or `HOST:PORT`, no scheme, no path.
fn check_registry_host(value: &str) -> Result<String, ImageError> {
    let bad = || ImageError::BadOverride {
        value: value.to_string(),
    };
    if value.contains("://") || value.contains('/') || value.contains(char::is_whitespace) {
        return Err(bad());
    }
    let (host, port) = split_host_port(value);
    if host.is_empty() || port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(bad());
    }
    Ok(value.to_string())
}

fn split_host_port(value: &str) -> (&str, Option<&str>) {
    if let Some(rest) = value.strip_prefix('[') {
        // [::1]:5000
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (value, None),
        };
    }
    match value.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (value, None),
    }
}

/// Loopback registries (127.0.0.0/8, ::1, localhost) are the only ones spoken to over plain HTTP.
pub fn is_loopback_registry(registry: &str) -> bool {
    let (host, _) = split_host_port(registry);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// One binary inside one image.
#[derive(Debug, Clone)]
pub struct ImageBinary {
    /// The image as its publisher names it (`ghcr.io/kedacore/keda:2.15.0`).
    pub reference: String,
    /// The digest the tag must name (from the catalog), when pinned.
    pub pinned_digest: Option<String>,
    /// The file inside the image (`/keda`).
    pub path: String,
}

/// A binary taken out of an image.
#[derive(Debug, Clone)]
pub struct PulledBinary {
    pub path: PathBuf,
    pub origin: BinaryOrigin,
    /// Layer bytes downloaded (0 from the cache).
    pub downloaded_bytes: u64,
    /// Wall-clock seconds of the pull (resolution, download, checks, extraction).
    pub seconds: f64,
}

impl PulledBinary {
    /// The index (or manifest) digest the tag named.
    pub fn digest(&self) -> &str {
        match &self.origin {
            BinaryOrigin::Image { digest, .. } => digest,
            BinaryOrigin::Module { .. } => "",
        }
    }
}

/// The reference with the registry override applied.
pub fn effective_reference(reference: &str, opts: &ImageOptions) -> Result<Reference, ImageError> {
    let parsed: Reference = reference.parse().map_err(|e| ImageError::BadReference {
        reference: reference.to_string(),
        message: format!("{e}"),
    })?;
    let Some(registry) = &opts.registry_override else {
        return Ok(parsed);
    };
    Ok(match (parsed.tag(), parsed.digest()) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(
            registry.clone(),
            parsed.repository().to_string(),
            tag.to_string(),
            digest.to_string(),
        ),
        (None, Some(digest)) => Reference::with_digest(
            registry.clone(),
            parsed.repository().to_string(),
            digest.to_string(),
        ),
        (tag, None) => Reference::with_tag(
            registry.clone(),
            parsed.repository().to_string(),
            tag.unwrap_or("latest").to_string(),
        ),
    })
}

/// An anonymous client for `reference`'s registry: HTTPS, or plain HTTP for a loopback registry; rustls on ring.
pub fn client_for(reference: &Reference, opts: &ImageOptions) -> Result<Client, ImageError> {
    // reqwest 0.13 without a bundled provider takes rustls's process default: ring, as everywhere in the
    // harness. Installing fails harmlessly when one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = reference.resolve_registry().to_string();
    let protocol = if is_loopback_registry(&registry) {
        ClientProtocol::HttpsExcept(vec![registry])
    } else {
        ClientProtocol::Https
    };
    // try_from, not new: `new` falls back to a default client (HTTPS, any platform) when this one fails.
    Client::try_from(ClientConfig {
        protocol,
        connect_timeout: Some(opts.probe_timeout),
        read_timeout: Some(opts.read_timeout),
        platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
        ..Default::default()
    })
    .map_err(|e| ImageError::Registry {
        reference: reference.whole(),
        what: "the HTTP client".into(),
        message: e.to_string(),
    })
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `sha256:<64 hex>`.
pub fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn registry_error(reference: &Reference, what: &str, e: OciDistributionError) -> ImageError {
    if let OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) =
        e
    {
        return ImageError::DigestMismatch {
            reference: reference.whole(),
            what: what.to_string(),
            expected,
            actual,
        };
    }
    ImageError::Registry {
        reference: reference.whole(),
        what: what.to_string(),
        message: format!("{e}"),
    }
}

const MANIFEST_TYPES: &[&str] = &[
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
];

/// Ask the registry for the tag's manifest digest, giving up after `opts.probe_timeout`: what `auto` does
/// before it decides. `Err` says why the registry is not usable.
pub async fn probe(binary: &ImageBinary, opts: &ImageOptions) -> Result<(), String> {
    let reference = effective_reference(&binary.reference, opts).map_err(|e| e.to_string())?;
    let client = client_for(&reference, opts).map_err(|e| e.to_string())?;
    let started = Instant::now();
    match tokio::time::timeout(
        opts.probe_timeout,
        client.fetch_manifest_digest(&reference, &RegistryAuth::Anonymous),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "{} did not serve {} ({e})",
            reference.resolve_registry(),
            reference.whole()
        )),
        Err(_) => Err(format!(
            "{} did not answer within {:.0} s",
            reference.resolve_registry(),
            started.elapsed().as_secs_f64()
        )),
    }
}

/// What the cache remembers about a tag: the digest it named and the platform manifest the binary came from.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagRecord {
    reference: String,
    digest: String,
    manifest_digest: String,
}

fn tag_record_path(cache_root: &Path, reference: &str, path_in_image: &str) -> PathBuf {
    let key = hex::encode(Sha256::digest(format!("{reference}\0{path_in_image}")));
    cache_root.join("tags").join(format!("{}.json", &key[..32]))
}

fn binary_cache_path(cache_root: &Path, manifest_digest: &str, path_in_image: &str) -> PathBuf {
    let name = path_in_image.rsplit('/').next().unwrap_or("binary");
    cache_root
        .join(manifest_digest.replace(':', "-"))
        .join(name)
}

/// The cached binary of a tag pulled before, when the cache has it (and its pin, if any, agrees).
fn cached_binary(
    binary: &ImageBinary,
    reference: &Reference,
    opts: &ImageOptions,
) -> Option<(PathBuf, TagRecord)> {
    let record_path = tag_record_path(&opts.cache_root, &reference.whole(), &binary.path);
    let record: TagRecord = serde_json::from_slice(&std::fs::read(record_path).ok()?).ok()?;
    if record.reference != reference.whole() {
        return None;
    }
    if let Some(pin) = &binary.pinned_digest {
        if pin != &record.digest {
            return None;
        }
    }
    let path = binary_cache_path(&opts.cache_root, &record.manifest_digest, &binary.path);
    path.is_file().then_some((path, record))
}

/// True when `binary`'s tag was pulled before and its binary is in the cache: [`pull_binary`] then asks no
/// registry (what lets `auto` skip its probe on a warm machine).
pub fn is_cached(binary: &ImageBinary, opts: &ImageOptions) -> bool {
    effective_reference(&binary.reference, opts)
        .ok()
        .is_some_and(|r| cached_binary(binary, &r, opts).is_some())
}

/// Pull (or reuse) `binary`; see the module docs.
pub async fn pull_binary(
    binary: &ImageBinary,
    opts: &ImageOptions,
) -> Result<PulledBinary, ImageError> {
    let started = Instant::now();
    let reference = effective_reference(&binary.reference, opts)?;
    let whole = reference.whole();
    let wanted = normalize(&binary.path).ok_or_else(|| ImageError::BadReference {
        reference: binary.reference.clone(),
        message: format!("`{}` is no path inside an image", binary.path),
    })?;
    if let Some((path, record)) = cached_binary(binary, &reference, opts) {
        tracing::info!(reference = %whole, digest = %record.digest, "binary from the image cache");
        return Ok(PulledBinary {
            path,
            origin: BinaryOrigin::Image {
                reference: whole,
                digest: record.digest,
                manifest_digest: record.manifest_digest,
                cached: true,
            },
            downloaded_bytes: 0,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    tracing::info!(reference = %whole, path = %binary.path, "pulling");
    let client = client_for(&reference, opts)?;
    let auth = RegistryAuth::Anonymous;
    let (top_bytes, crate_digest) = client
        .pull_manifest_raw(&reference, &auth, MANIFEST_TYPES)
        .await
        .map_err(|e| registry_error(&reference, "the manifest", e))?;
    let top_digest = verify_manifest(&reference, "the manifest", &top_bytes, &crate_digest)?;
    let expected_top = binary
        .pinned_digest
        .clone()
        .or_else(|| reference.digest().map(str::to_string));
    if let Some(expected) = expected_top {
        if expected != top_digest {
            return Err(ImageError::DigestMismatch {
                reference: whole,
                what: "the manifest (pinned digest)".into(),
                expected,
                actual: top_digest,
            });
        }
    }
    let top: OciManifest =
        serde_json::from_slice(&top_bytes).map_err(|e| ImageError::BadImage {
            reference: whole.clone(),
            message: format!("the manifest is not an OCI/Docker manifest or index: {e}"),
        })?;
    let (manifest, manifest_digest) = match top {
        OciManifest::Image(m) => (m, top_digest.clone()),
        OciManifest::ImageIndex(index) => {
            let platforms: Vec<String> = index
                .manifests
                .iter()
                .map(|m| {
                    m.platform
                        .as_ref()
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                        .unwrap_or_else(|| "?".into())
                })
                .collect();
            let chosen =
                oci_client::client::linux_amd64_resolver(&index.manifests).ok_or_else(|| {
                    ImageError::BadImage {
                        reference: whole.clone(),
                        message: format!(
                            "the index has no {PLATFORM} image (it has {})",
                            platforms.join(", ")
                        ),
                    }
                })?;
            let entry_size = index
                .manifests
                .iter()
                .find(|m| m.digest == chosen)
                .map(|m| m.size);
            let platform_ref = reference.clone_with_digest(chosen.clone());
            let what = format!("the {PLATFORM} manifest");
            let (bytes, crate_digest) = client
                .pull_manifest_raw(&platform_ref, &auth, MANIFEST_TYPES)
                .await
                .map_err(|e| registry_error(&reference, &what, e))?;
            let actual = verify_manifest(&reference, &what, &bytes, &crate_digest)?;
            if actual != chosen {
                return Err(ImageError::DigestMismatch {
                    reference: whole,
                    what,
                    expected: chosen,
                    actual,
                });
            }
            if let Some(size) = entry_size.filter(|s| *s != bytes.len() as i64) {
                return Err(ImageError::BadImage {
                    reference: whole,
                    message: format!(
                        "the index says the {PLATFORM} manifest has {size} bytes, the registry sent {}",
                        bytes.len()
                    ),
                });
            }
            let m: OciImageManifest =
                serde_json::from_slice(&bytes).map_err(|e| ImageError::BadImage {
                    reference: whole.clone(),
                    message: format!("the {PLATFORM} entry is not an image manifest: {e}"),
                })?;
            (m, actual)
        }
    };

    let target = binary_cache_path(&opts.cache_root, &manifest_digest, &binary.path);
    let dir = target
        .parent()
        .expect("cache path has a folder")
        .to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io_err("creating the image cache folder", &dir))?;
    let _lock = lock_dir(&dir).await?;
    let mut downloaded = 0u64;
    if !target.is_file() {
        check_config(&client, &reference, &manifest, &dir).await?;
        downloaded = extract_binary(&client, &reference, &manifest, &wanted, &dir, &target).await?;
    }
    let record = TagRecord {
        reference: whole.clone(),
        digest: top_digest.clone(),
        manifest_digest: manifest_digest.clone(),
    };
    let record_path = tag_record_path(&opts.cache_root, &whole, &binary.path);
    write_atomically(
        &record_path,
        &serde_json::to_vec_pretty(&record).expect("a tag record serializes"),
    )?;
    Ok(PulledBinary {
        path: target,
        origin: BinaryOrigin::Image {
            reference: whole,
            digest: top_digest,
            manifest_digest,
            cached: downloaded == 0,
        },
        downloaded_bytes: downloaded,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Our own check of a manifest: size bound, sha256, and agreement with what the crate took for its digest.
fn verify_manifest(
    reference: &Reference,
    what: &str,
    bytes: &[u8],
    crate_digest: &str,
) -> Result<String, ImageError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ImageError::BadImage {
            reference: reference.whole(),
            message: format!(
                "{what} has {} bytes: no manifest is that large",
                bytes.len()
            ),
        });
    }
    let actual = sha256_digest(bytes);
    if crate_digest != actual {
        return Err(ImageError::DigestMismatch {
            reference: reference.whole(),
            what: format!("{what} (registry's Docker-Content-Digest)"),
            expected: crate_digest.to_string(),
            actual,
        });
    }
    Ok(actual)
}

/// The image config says linux/amd64 (a wrong platform binary would fail in confusing ways at exec).
async fn check_config(
    client: &Client,
    reference: &Reference,
    manifest: &OciImageManifest,
    dir: &Path,
) -> Result<(), ImageError> {
    #[derive(Deserialize)]
    struct Config {
        os: Option<String>,
        architecture: Option<String>,
    }
    let path = dir.join("config.partial");
    download_blob(
        client,
        reference,
        &manifest.config,
        "the image config",
        &path,
        MAX_CONFIG_BYTES,
    )
    .await?;
    let bytes = std::fs::read(&path).map_err(io_err("reading", &path))?;
    let _ = std::fs::remove_file(&path);
    let config: Config = serde_json::from_slice(&bytes).map_err(|e| ImageError::BadImage {
        reference: reference.whole(),
        message: format!("the image config is not JSON of an image config: {e}"),
    })?;
    let platform = format!(
        "{}/{}",
        config.os.as_deref().unwrap_or("?"),
        config.architecture.as_deref().unwrap_or("?")
    );
    if platform != PLATFORM {
        return Err(ImageError::BadImage {
            reference: reference.whole(),
            message: format!("the image is for {platform}, the local backend runs {PLATFORM}"),
        });
    }
    Ok(())
}

/// Download a blob to `out`, hashing as it streams; `Err(DigestMismatch)` unless it is exactly the
/// descriptor's bytes.
async fn download_blob(
    client: &Client,
    reference: &Reference,
    descriptor: &OciDescriptor,
    what: &str,
    out: &Path,
    max_bytes: u64,
) -> Result<u64, ImageError> {
    let whole = reference.whole();
    if !is_sha256_digest(&descriptor.digest) {
        return Err(ImageError::BadImage {
            reference: whole,
            message: format!(
                "{what} names digest `{}`: only sha256 digests are accepted",
                descriptor.digest
            ),
        });
    }
    if descriptor.size < 0 || descriptor.size as u64 > max_bytes {
        return Err(ImageError::BadImage {
            reference: whole,
            message: format!(
                "{what} {} says {} bytes, more than the {max_bytes} accepted",
                descriptor.digest, descriptor.size
            ),
        });
    }
    let what_blob = format!("{what} {}", descriptor.digest);
    let mut stream = client
        .pull_blob_stream(reference, descriptor)
        .await
        .map_err(|e| registry_error(reference, &what_blob, e))?;
    let mut file = File::create(out).map_err(io_err("creating", out))?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut crate_error = None;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                crate_error = Some(e);
                break;
            }
        };
        written += chunk.len() as u64;
        if written > descriptor.size as u64 {
            break;
        }
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io_err("writing", out))?;
    }
    drop(file);
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    let refuse = |e: ImageError| {
        let _ = std::fs::remove_file(out);
        e
    };
    if written != descriptor.size as u64 {
        return Err(refuse(ImageError::DigestMismatch {
            reference: whole,
            what: format!(
                "{what_blob} (the registry sent {written} bytes, the manifest says {})",
                descriptor.size
            ),
            expected: descriptor.digest.clone(),
            actual: if written > descriptor.size as u64 {
                "(more bytes than the manifest says)".into()
            } else {
                actual
            },
        }));
    }
    if actual != descriptor.digest {
        return Err(refuse(ImageError::DigestMismatch {
            reference: whole,
            what: what_blob,
            expected: descriptor.digest.clone(),
            actual,
        }));
    }
    if let Some(e) = crate_error {
        return Err(refuse(ImageError::Registry {
            reference: whole,
            what: what_blob,
            message: format!("the download broke off: {e}"),
        }));
    }
    Ok(written)
}

/// Fetch layers top-down until one decides about `wanted`; the binary lands at `target` (0755) only when
/// every blob it needed matched its digest.
async fn extract_binary(
    client: &Client,
    reference: &Reference,
    manifest: &OciImageManifest,
    wanted: &str,
    dir: &Path,
    target: &Path,
) -> Result<u64, ImageError> {
    let whole = reference.whole();
    let partial = target.with_extension("partial");
    let mut downloaded = 0u64;
    let mut wanted = wanted.to_string();
    let mut hops = 0;
    let mut layer_index = manifest.layers.len();
    // Layers already fetched, by index, so a symlink restart does not download twice.
    let mut fetched: Vec<Option<PathBuf>> = vec![None; manifest.layers.len()];
    let result = loop {
        if layer_index == 0 {
            break Err(ImageError::NotInImage {
                reference: whole.clone(),
                path: wanted.clone(),
                why: format!("no layer of {} has it", manifest.layers.len()),
            });
        }
        layer_index -= 1;
        let layer = &manifest.layers[layer_index];
        let blob = match &fetched[layer_index] {
            Some(p) => p.clone(),
            None => {
                let p = dir.join(format!("layer-{layer_index}.partial"));
                downloaded += download_blob(
                    client,
                    reference,
                    layer,
                    &format!("layer {}", layer_index + 1),
                    &p,
                    MAX_LAYER_BYTES,
                )
                .await?;
                fetched[layer_index] = Some(p.clone());
                p
            }
        };
        let lookup = {
            let (blob, wanted, partial) = (blob.clone(), wanted.clone(), partial.clone());
            tokio::task::spawn_blocking(move || {
                find_in_layer(&blob, &wanted, &partial, MAX_BINARY_BYTES)
            })
            .await
            .map_err(|e| ImageError::BadImage {
                reference: whole.clone(),
                message: format!("the extraction task failed: {e}"),
            })?
        };
        let lookup = lookup.map_err(|e| ImageError::BadLayer {
            reference: whole.clone(),
            layer: format!("{} ({})", layer_index + 1, layer.digest),
            message: e.to_string(),
        })?;
        match lookup {
            Lookup::File(_) => break Ok(()),
            Lookup::Absent => continue,
            Lookup::Deleted => {
                break Err(ImageError::NotInImage {
                    reference: whole.clone(),
                    path: wanted.clone(),
                    why: format!("layer {} deletes it (whiteout)", layer_index + 1),
                })
            }
            Lookup::Symlink(to) | Lookup::Hardlink(to) => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    break Err(ImageError::NotInImage {
                        reference: whole.clone(),
                        path: wanted.clone(),
                        why: format!("more than {MAX_LINK_HOPS} links in a row"),
                    });
                }
                tracing::info!(from = %wanted, to = %to, "following a link inside the image");
                wanted = to;
                // A symlink is resolved from the top of the image again; a hard link names a file of this
                // same layer, which the restart reaches too (upper layers were searched already and were absent).
                layer_index = manifest.layers.len();
            }
        }
    };
    for p in fetched.into_iter().flatten() {
        let _ = std::fs::remove_file(p);
    }
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err("making executable", &partial))?;
    std::fs::rename(&partial, target).map_err(io_err("moving into the cache", target))?;
    Ok(downloaded)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let dir = path.parent().expect("a cache file has a folder");
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io_err("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("moving into place", path))
}

/// One pull per platform manifest at a time across processes (parallel test binaries, side-by-side cells).
async fn lock_dir(dir: &Path) -> Result<File, ImageError> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("opening the image cache lock", &path))?;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(ImageError::Io {
                    action: "locking",
                    path,
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(registry: Option<&str>) -> ImageOptions {
        ImageOptions {
            registry_override: registry.map(str::to_string),
            cache_root: "/nonexistent".into(),
            probe_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_override_replaces_only_the_registry() {
        let r = effective_reference(
            "ghcr.io/kedacore/keda:2.15.0",
            &opts(Some("127.0.0.1:5000")),
        )
        .unwrap();
        assert_eq!(r.whole(), "127.0.0.1:5000/kedacore/keda:2.15.0");
        let r = effective_reference(
            "registry.k8s.io/kube-apiserver:v1.35.4",
            &opts(Some("127.0.0.1:5000")),
        )
        .unwrap();
        assert_eq!(r.whole(), "127.0.0.1:5000/kube-apiserver:v1.35.4");
        let r = effective_reference("ghcr.io/kedacore/keda:2.15.0", &opts(None)).unwrap();
        assert_eq!(r.resolve_registry(), "ghcr.io");
    }

    #[test]
    fn plain_http_only_for_loopback() {
        for host in ["127.0.0.1:5000", "127.9.9.9", "localhost:1", "[::1]:5000"] {
            assert!(is_loopback_registry(host), "{host}");
        }
        for host in [
            "ghcr.io",
            "10.0.0.1:5000",
            "registry.k8s.io",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_registry(host), "{host}");
        }
    }

    #[test]
    fn a_bad_override_is_refused_with_the_fix() {
        for bad in ["http://127.0.0.1:5000", "127.0.0.1:5000/x", "host:port", ""] {
            let err = check_registry_host(bad).unwrap_err().to_string();
            assert!(err.contains("HOST:PORT"), "{err}");
        }
        assert!(check_registry_host("127.0.0.1:5000").is_ok());
    }

    #[test]
    fn sources_parse_and_print() {
        for s in ["image", "module", "auto"] {
            assert_eq!(s.parse::<BinarySource>().unwrap().to_string(), s);
        }
        assert!("docker"
            .parse::<BinarySource>()
            .unwrap_err()
            .contains("image, module or auto"));
        assert!(is_sha256_digest(&sha256_digest(b"x")));
        assert!(!is_sha256_digest("sha256:abc"));
    }
}
