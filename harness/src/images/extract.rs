//! One file out of an image's layer tarballs, without unpacking the image.
//!
//! Layers are searched from the top one down, as an overlay filesystem reads them: the first layer that has the
//! path (or a whiteout hiding it) decides. Whiteouts follow the OCI image spec (`layer.md`, "Whiteouts"): a
//! `.wh.NAME` entry deletes `NAME` of the lower layers, a `.wh..wh..opq` entry in a directory hides all lower
//! content of that directory. A symlink at the path is followed (inside the image, never outside its root); a
//! hard link names another path of the same layer.
//!
//! Hostile archives are refused rather than interpreted: an entry with an absolute path or a `..` component
//! anywhere in a layer refuses the whole image (a tool that unpacks it could write outside its root), and the
//! wanted file must be no larger than the caller's limit.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

/// gzip's magic bytes (RFC 1952, 2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// zstd's frame magic (RFC 8878, 3.1.1), little-endian 0xFD2FB528.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Symlinks followed at most, so a link loop ends.
pub(crate) const MAX_LINK_HOPS: usize = 8;

/// What one layer says about a path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A regular file, written to the output path; its size.
    File(u64),
    /// A symlink to this path (already resolved against the link's directory, relative to the image root).
    Symlink(String),
    /// A hard link to this path of the same layer (relative to the image root).
    Hardlink(String),
    /// A whiteout hides it (and everything below this layer).
    Deleted,
    /// This layer does not mention it.
    Absent,
}

/// Why a layer was refused or could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LayerError {
    #[error("entry `{entry}`: {message}")]
    Entry { entry: String, message: String },
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `usr/local/bin/kube-apiserver` from `/usr/local/bin/kube-apiserver` or `./usr/local/bin/kube-apiserver`;
/// `None` for a path that leaves the root (`..`) or names nothing.
pub(crate) fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A symlink's target as a path from the image root: absolute targets start at the root, relative ones at the
/// link's directory. `None` when it climbs above the root.
pub(crate) fn resolve_link(link_path: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        let mut dir: Vec<&str> = link_path.split('/').collect();
        dir.pop();
        dir
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// An archive entry's path, checked: `Err` for an absolute path or one with a `..` component.
fn entry_path(raw: &[u8]) -> Result<String, LayerError> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let refuse = |message: &str| LayerError::Entry {
        entry: text.clone(),
        message: message.to_string(),
    };
    if text.starts_with('/') {
        return Err(refuse(
            "absolute path in a layer (an unpacker would write outside the image root)",
        ));
    }
    if text.split('/').any(|p| p == "..") {
        return Err(refuse(
            "`..` in a layer path (an unpacker would write outside the image root)",
        ));
    }
    Ok(text
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/"))
}

/// Open a layer blob as a tar stream: gzip when it starts with gzip's magic bytes, plain tar otherwise. The
/// bytes decide, not the media type (registries and tools mislabel); zstd is named and refused.
fn open_layer(blob: &Path) -> Result<Box<dyn Read>, LayerError> {
    let mut file = File::open(blob)?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic)?;
    let file = File::open(blob)?;
    if n >= 2 && magic[..2] == GZIP_MAGIC {
        return Ok(Box::new(flate2::read::GzDecoder::new(BufReader::new(file))));
    }
    if n == 4 && magic == ZSTD_MAGIC {
        return Err(LayerError::Format(
            "the layer is zstd-compressed, which the harness does not unpack; use --keda-source module".into(),
        ));
    }
    Ok(Box::new(BufReader::new(file)))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Look for `wanted` (normalized, see [`normalize`]) in one layer blob; a regular file is copied to `out`.
///
/// Every entry is checked (paths that leave the root refuse the layer even after the file was found), so a
/// layer is judged as a whole.
pub(crate) fn find_in_layer(
    blob: &Path,
    wanted: &str,
    out: &Path,
    max_file_bytes: u64,
) -> Result<Lookup, LayerError> {
    let mut archive = tar::Archive::new(open_layer(blob)?);
    let mut found: Option<Lookup> = None;
    let mut deleted = false;
    let entries = archive
        .entries()
        .map_err(|e| LayerError::Format(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| LayerError::Format(format!("unreadable tar entry: {e}")))?;
        let path = entry_path(&entry.path_bytes())?;
        if path.is_empty() {
            continue;
        }
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", path.as_str()),
        };
        if name == ".wh..wh..opq" {
            // Lower layers' content of `dir` is hidden; this layer's own entries in it still count.
            if dir.is_empty() || wanted.starts_with(&format!("{dir}/")) {
                deleted = true;
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let hidden_path = if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            };
            if wanted == hidden_path || wanted.starts_with(&format!("{hidden_path}/")) {
                deleted = true;
            }
            continue;
        }
        if path != wanted || found.is_some() {
            continue;
        }
        let kind = entry.header().entry_type();
        found = Some(if kind.is_file() {
            let size = entry.size();
            if size > max_file_bytes {
                return Err(LayerError::Entry {
                    entry: path,
                    message: format!(
                        "{size} bytes, more than the {max_file_bytes} bytes a binary of this image may have"
                    ),
                });
            }
            let mut file = File::create(out)?;
            let copied = std::io::copy(&mut (&mut entry).take(max_file_bytes + 1), &mut file)?;
            file.flush()?;
            if copied != size {
                return Err(LayerError::Entry {
                    entry: path,
                    message: format!("the header says {size} bytes, the archive holds {copied}"),
                });
            }
            Lookup::File(size)
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let resolved = if kind.is_symlink() {
                resolve_link(&path, &target)
            } else {
                normalize(&target)
            };
            let Some(resolved) = resolved else {
                return Err(LayerError::Entry {
                    entry: path,
                    message: format!("link to `{target}`, which leaves the image root"),
                });
            };
            if kind.is_symlink() {
                Lookup::Symlink(resolved)
            } else {
                Lookup::Hardlink(resolved)
            }
        } else {
            return Err(LayerError::Entry {
                entry: path,
                message: format!("not a regular file but a {kind:?} entry"),
            });
        });
    }
    Ok(match found {
        Some(f) => f,
        None if deleted => Lookup::Deleted,
        None => Lookup::Absent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Item<'a> {
        File(&'a str, &'a [u8]),
        Symlink(&'a str, &'a str),
        Raw(&'a str),
    }

    fn layer(dir: &Path, name: &str, items: &[Item], gzip: bool) -> std::path::PathBuf {
        let mut bytes = Vec::new();
        {
            let mut b = tar::Builder::new(&mut bytes);
            for item in items {
                let mut h = tar::Header::new_gnu();
                match item {
                    Item::File(p, data) => {
                        h.set_size(data.len() as u64);
                        h.set_mode(0o755);
                        h.set_entry_type(tar::EntryType::Regular);
                        b.append_data(&mut h, p, *data).unwrap();
                    }
                    Item::Symlink(p, t) => {
                        h.set_size(0);
                        h.set_entry_type(tar::EntryType::Symlink);
                        b.append_link(&mut h, p, t).unwrap();
                    }
                    Item::Raw(p) => {
                        // The tar crate refuses `..` and absolute paths when building: write the name field as
                        // a hostile tool would.
                        h.set_size(1);
                        h.set_entry_type(tar::EntryType::Regular);
                        let name = &mut h.as_old_mut().name;
                        name[..p.len()].copy_from_slice(p.as_bytes());
                        h.set_cksum();
                        b.append(&h, &b"x"[..]).unwrap();
                    }
                }
            }
            b.finish().unwrap();
        }
        let path = dir.join(name);
        if gzip {
            let mut enc =
                flate2::write::GzEncoder::new(File::create(&path).unwrap(), Default::default());
            enc.write_all(&bytes).unwrap();
            enc.finish().unwrap();
        } else {
            std::fs::write(&path, bytes).unwrap();
        }
        path
    }

    #[test]
    fn a_file_is_copied_out_of_a_gzip_or_plain_layer() {
        let d = tempfile::tempdir().unwrap();
        for gzip in [true, false] {
            let blob = layer(
                d.path(),
                "l",
                &[
                    Item::File("etc/passwd", b"root"),
                    Item::File("keda", b"ELF"),
                ],
                gzip,
            );
            let out = d.path().join("out");
            assert_eq!(
                find_in_layer(&blob, "keda", &out, 10).unwrap(),
                Lookup::File(3)
            );
            assert_eq!(std::fs::read(&out).unwrap(), b"ELF");
            assert_eq!(
                find_in_layer(&blob, "bin/sh", &out, 10).unwrap(),
                Lookup::Absent
            );
        }
    }

    #[test]
    fn whiteouts_hide_lower_layers() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let wh = layer(d.path(), "a", &[Item::File("usr/bin/.wh.etcd", b"")], true);
        assert_eq!(
            find_in_layer(&wh, "usr/bin/etcd", &out, 10).unwrap(),
            Lookup::Deleted
        );
        let opaque = layer(d.path(), "b", &[Item::File("usr/.wh..wh..opq", b"")], true);
        assert_eq!(
            find_in_layer(&opaque, "usr/bin/etcd", &out, 10).unwrap(),
            Lookup::Deleted
        );
        // An opaque directory still shows what its own layer puts there.
        let both = layer(
            d.path(),
            "c",
            &[
                Item::File("usr/.wh..wh..opq", b""),
                Item::File("usr/bin/etcd", b"new"),
            ],
            true,
        );
        assert_eq!(
            find_in_layer(&both, "usr/bin/etcd", &out, 10).unwrap(),
            Lookup::File(3)
        );
    }

    #[test]
    fn hostile_entries_refuse_the_layer() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        for bad in ["../../etc/cron.d/x", "/etc/passwd", "a/../../b"] {
            let blob = layer(d.path(), "h", &[Item::Raw(bad)], false);
            let err = find_in_layer(&blob, "keda", &out, 10).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        let big = layer(d.path(), "big", &[Item::File("keda", &[0u8; 64])], true);
        let err = find_in_layer(&big, "keda", &out, 10).unwrap_err();
        assert!(err.to_string().contains("64 bytes"), "{err}");
        let escaping = layer(
            d.path(),
            "s",
            &[Item::Symlink("keda", "../../../bin/sh")],
            true,
        );
        let err = find_in_layer(&escaping, "keda", &out, 10).unwrap_err();
        assert!(err.to_string().contains("leaves the image root"), "{err}");
        let truncated = d.path().join("t");
        std::fs::write(&truncated, [0x1f, 0x8b, 8, 0, 0]).unwrap();
        assert!(find_in_layer(&truncated, "keda", &out, 10).is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        assert_eq!(
            resolve_link("usr/local/bin/etcd", "etcd-3.6.5").as_deref(),
            Some("usr/local/bin/etcd-3.6.5")
        );
        assert_eq!(
            resolve_link("usr/local/bin/etcd", "/opt/etcd").as_deref(),
            Some("opt/etcd")
        );
        assert_eq!(
            resolve_link("usr/local/bin/etcd", "../lib/etcd").as_deref(),
            Some("usr/local/lib/etcd")
        );
        assert_eq!(resolve_link("etcd", "../../x"), None);
        assert_eq!(
            normalize("/usr/local/bin/kube-apiserver").as_deref(),
            Some("usr/local/bin/kube-apiserver")
        );
        assert_eq!(normalize("/../x"), None);
    }
}
