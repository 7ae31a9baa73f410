//! Fetching a plugin package from an `http://` or `https://` URL, as eKuiper's install does.
//!
//! `https://` goes through rustls (no OpenSSL on the machine) and trusts Mozilla's root
//! certificates, built in (webpki-roots), unless `shmplug serve --tls-ca FILE` names the
//! certificates to trust instead (a PEM file: a private certificate authority, or a server's
//! self-signed certificate).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// The largest package downloaded.
pub const MAX_DOWNLOAD: u64 = 512 * 1024 * 1024;
/// The longest a download may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The HTTP client of the server's downloads (made once: it keeps connections and the roots).
#[derive(Debug)]
pub struct Downloader {
    agent: ureq::Agent,
    /// Where the trusted certificates come from, for error messages.
    roots: String,
}

impl Downloader {
    /// A client that trusts the certificates in the PEM file `ca` if given, else the built-in
    /// roots.
    ///
    /// # Errors
    /// `ca` cannot be read, is not PEM, or holds no certificate.
    pub fn new(ca: Option<&Path>) -> Result<Downloader, String> {
        let (root_certs, roots) = match ca {
            Some(path) => {
                let certs = read_certificates(path)?;
                let roots = format!(
                    "the {} certificate(s) in {} (--tls-ca)",
                    certs.len(),
                    path.display()
                );
                (RootCerts::new_with_certs(&certs), roots)
            }
            None => (
                RootCerts::WebPki,
                "the built-in public roots (Mozilla's)".to_owned(),
            ),
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .tls_config(TlsConfig::builder().root_certs(root_certs).build())
            .build()
            .into();
        Ok(Downloader { agent, roots })
    }

    /// Downloads `url` into `dir` for plugin `name` (blocking).
    ///
    /// # Errors
    /// A message that names the URL and what failed: connecting, a certificate this client
    /// does not trust, a status other than 200, a body over [`MAX_DOWNLOAD`], writing the file.
    pub fn fetch(&self, url: &str, dir: &Path, name: &str) -> Result<Downloaded, String> {
        let fail = |detail: String| format!("fail to download file {url}: {detail}");
        let response = self
            .agent
            .get(url)
            .call()
            .map_err(|e| fail(self.explain(&e)))?;
        if response.status() != 200 {
            return Err(fail(format!("the server answered {}", response.status())));
        }
        let downloaded = Downloaded {
            path: dir.join(format!(".download-{name}-{}.zip", std::process::id())),
        };
        let mut file = fs::File::create(&downloaded.path)
            .map_err(|e| fail(format!("cannot create {}: {e}", downloaded.path.display())))?;
        let mut body = response
            .into_body()
            .into_with_config()
            .limit(MAX_DOWNLOAD)
            .reader();
        io::copy(&mut body, &mut file).map_err(|e| {
            fail(format!(
                "{e} (a package may hold at most {MAX_DOWNLOAD} bytes)"
            ))
        })?;
        Ok(downloaded)
    }

    /// `e` in words; a certificate that is not trusted says which roots were tried and how to
    /// trust it.
    fn explain(&self, e: &ureq::Error) -> String {
        let tls = match e {
            ureq::Error::Rustls(tls) => Some(tls),
            // The handshake's error, carried in an I/O error.
            ureq::Error::Io(io) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
            _ => None,
        };
        match tls {
            Some(rustls::Error::InvalidCertificate(why)) => format!(
                "the server's certificate is not trusted ({why:?}; trusted: {}); give the \
                 certificate of the authority that signed it with `shmplug serve --tls-ca FILE`",
                self.roots
            ),
            Some(other) => format!("the TLS handshake failed: {other}"),
            None => e.to_string(),
        }
    }
}

/// Every certificate in the PEM file at `path`.
fn read_certificates(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let fail = |detail: String| format!("--tls-ca {}: {detail}", path.display());
    let pem = fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        // Keys and other items are skipped.
        if let PemItem::Certificate(cert) =
            item.map_err(|e| fail(format!("not a PEM file: {e}")))?
        {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err(fail(
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// A downloaded package in the plugins directory (a dot-file, never listed), removed on drop.
#[derive(Debug)]
pub struct Downloaded {
    path: PathBuf,
}

impl Downloaded {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Downloaded {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
