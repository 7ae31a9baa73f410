//! Fetching a plugin package from an `http://` URL, as eKuiper's install does. `https://` is
//! refused with a clear error: this build carries no TLS stack.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest package downloaded.
pub const MAX_DOWNLOAD: u64 = 512 * 1024 * 1024;
/// The longest a download may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(120);

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

/// Downloads `url` into `dir` for plugin `name` (blocking).
///
/// # Errors
/// A message that names the URL and what failed: connecting, a status other than 200, a body
/// over [`MAX_DOWNLOAD`], writing the file.
pub fn fetch(url: &str, dir: &Path, name: &str) -> Result<Downloaded, String> {
    let fail = |detail: String| format!("fail to download file {url}: {detail}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
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
