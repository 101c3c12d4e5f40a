//! The run's certificate authority.
//!
//! Every Azure client refuses plain HTTP, and the KEDA operator must believe it is talking to
//! `login.microsoftonline.com`. So each run generates its own CA, issues server certificates for the names the
//! mocks answer to, and hands the CA file to the clients (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, ...). The CA never
//! leaves the run's temp directory and is trusted by nothing else.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("`{name}` is not a valid DNS name or IP address for a certificate")]
    BadName { name: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("reading PEM: {0}")]
    Pem(String),
}

/// A certificate authority generated for one run.
pub struct TestCa {
    key: KeyPair,
    cert: rcgen::Certificate,
    pem: String,
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA certificate that signed it (clients trust this).
    pub ca_pem: String,
}

impl TestCa {
    /// A fresh CA whose subject says which harness made it.
    pub fn generate(common_name: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(
            DnType::OrganizationName,
            "keda-harness test CA (not trusted anywhere else)",
        );
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let pem = cert.pem();
        Ok(Self { key, cert, pem })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    /// Write the CA certificate where clients can be told to trust it.
    pub fn write_ca_file(&self, path: &Path) -> Result<(), CaError> {
        std::fs::write(path, &self.pem).map_err(|source| CaError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// A server certificate for DNS names and/or IP addresses (`"login.microsoftonline.com"`, `"127.0.0.1"`).
    pub fn issue_server(&self, names: &[&str]) -> Result<IssuedCert, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("keda-harness"),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A certificate for both ends of a mutual-TLS link (server and client authentication), as KEDA's own
    /// certificate rotation issues one for the operator's gRPC metrics service and the metrics adapter, which
    /// serves HTTPS and dials that service with the same key pair.
    pub fn issue_server_and_client(&self, names: &[&str]) -> Result<IssuedCert, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("keda-harness"),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params)
    }

    /// A client certificate; Kubernetes reads the user from CN and groups from O
    /// (e.g. `issue_client("admin", &["system:masters"])`).
    pub fn issue_client(
        &self,
        common_name: &str,
        organizations: &[&str],
    ) -> Result<IssuedCert, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        for o in organizations {
            dn.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<IssuedCert, CaError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.pem.clone(),
        })
    }

    /// A rustls root store holding only this CA: what a Rust client of the mocks trusts.
    pub fn root_store(&self) -> Result<rustls::RootCertStore, CaError> {
        let mut roots = rustls::RootCertStore::empty();
        for der in certs_from_pem(&self.pem)? {
            roots.add(der)?;
        }
        Ok(roots)
    }
}

impl IssuedCert {
    /// A rustls server configuration presenting this certificate (chain: leaf, CA).
    pub fn rustls_server_config(&self) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let mut chain = certs_from_pem(&self.cert_pem)?;
        chain.extend(certs_from_pem(&self.ca_pem)?);
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .map_err(|e| CaError::Pem(e.to_string()))?
            .ok_or_else(|| CaError::Pem("no private key in PEM".into()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Arc::new(config))
    }

    /// Write `cert.pem` and `key.pem` under `dir` with the given stem (`stem.crt`, `stem.key`).
    pub fn write_to(
        &self,
        dir: &Path,
        stem: &str,
    ) -> Result<(std::path::PathBuf, std::path::PathBuf), CaError> {
        let crt = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        // The key is the owner's alone (0600), whatever the umask or the directory it lands in.
        for (p, body, mode) in [(&crt, &self.cert_pem, 0o644), (&key, &self.key_pem, 0o600)] {
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(mode)
                .open(p)
                .and_then(|mut f| f.write_all(body.as_bytes()))
                .map_err(|source| CaError::Write {
                    path: p.display().to_string(),
                    source,
                })?;
        }
        Ok((crt, key))
    }
}

fn san(name: &str) -> Result<SanType, CaError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    if !valid {
        return Err(CaError::BadName {
            name: name.to_string(),
        });
    }
    let dns = name.to_string().try_into().map_err(|_| CaError::BadName {
        name: name.to_string(),
    })?;
    Ok(SanType::DnsName(dns))
}

fn certs_from_pem(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, CaError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Pem(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn issued_server_cert_verifies_against_the_ca() {
        let ca = TestCa::generate("test").unwrap();
        let leaf = ca
            .issue_server(&["login.microsoftonline.com", "127.0.0.1"])
            .unwrap();
        // A real rustls verifier must accept the chain for the name and the IP, and refuse another name.
        let roots = Arc::new(ca.root_store().unwrap());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        let end = certs_from_pem(&leaf.cert_pem).unwrap().remove(0);
        let now = rustls::pki_types::UnixTime::now();
        for (name, ok) in [
            ("login.microsoftonline.com", true),
            ("127.0.0.1", true),
            ("example.com", false),
        ] {
            let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
            let r = verifier.verify_server_cert(&end, &[], &sn, &[], now);
            assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
        }
        leaf.rustls_server_config().unwrap();
    }

    #[test]
    fn bad_name_is_refused_with_the_name() {
        let ca = TestCa::generate("test").unwrap();
        let err = ca.issue_server(&["not a name"]).err().unwrap();
        assert!(err.to_string().contains("not a name"), "{err}");
    }
}
