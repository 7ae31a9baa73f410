//! eKuiper's portable plugin endpoints, on the plugins directory shared with `shmplug plugins`:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /plugins/portables` | 200, a JSON array of plugins (as `GET .../{name}` shows each) |
//! | `POST /plugins/portables` `{"name", "file"}` | 201 `portable plugin NAME is created`: installed from the zip (`file://`, `http://` or `https://` URL) and started |
//! | `GET /plugins/portables/{name}` | 200 `{"name", "version", "language", "executable", "sources", "sinks", "functions"}` |
//! | `PUT /plugins/portables/{name}` `{"name", "file"}` | 200 `portable plugin NAME is updated`: the running process swapped for the new version's |
//! | `DELETE /plugins/portables/{name}` | 200 `portable plugin NAME is deleted`: stopped and removed |
//! | `GET /plugins/portables/{name}/status` | 200 `{"refCount": {RULE: N}, "status", "errMsg", "pid", "restarts"}` |
//!
//! Errors are eKuiper's: 400 (code 1000) for a bad body, URL, package or name clash, and for
//! deleting an unknown plugin; 404 (code 1002) for describing or asking the status of one.

use std::path::PathBuf;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shmplug_host::registry::{Listed, PluginInfo};
use shmplug_host::{Error as HostError, Phase};

use super::download;
use super::host::{self, Process};
use super::reply::{self, ApiError};
use super::{App, BODY_LIMIT};

/// The body of an install or update, as eKuiper takes it (other fields are ignored).
#[derive(Debug, Deserialize)]
pub struct Install {
    name: String,
    file: String,
}

/// A plugin as eKuiper describes a portable plugin.
#[derive(Debug, Serialize)]
pub struct Described {
    name: String,
    version: String,
    language: String,
    executable: String,
    sources: Vec<String>,
    sinks: Vec<String>,
    functions: Vec<String>,
}

impl From<PluginInfo> for Described {
    fn from(info: PluginInfo) -> Described {
        let m = info.manifest;
        Described {
            name: info.name,
            version: m.version,
            language: m.language,
            executable: info.executable.display().to_string(),
            sources: m.sources,
            sinks: m.sinks,
            functions: m.functions,
        }
    }
}

/// A plugin's status as eKuiper reports a portable plugin's, plus its pid and restarts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    ref_count: std::collections::BTreeMap<String, usize>,
    status: &'static str,
    err_msg: String,
    pid: Option<u32>,
    restarts: u64,
}

pub async fn list(State(app): State<App>) -> Result<Json<Vec<Described>>, ApiError> {
    let host = app.host.clone();
    let listed = blocking(move || host.registry().list())
        .await?
        .map_err(|e| ApiError::internal("listing portable plugins", e))?;
    let plugins = listed
        .into_iter()
        .filter_map(|entry| match entry {
            Listed::Plugin(info) => Some(Described::from(info)),
            Listed::Broken { name, error } => {
                tracing::warn!("not listing `{name}`: {error}");
                None
            }
        })
        .collect();
    Ok(Json(plugins))
}

pub async fn describe(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<Described>, ApiError> {
    let context = format!("describe portable plugin {name} error");
    let host = app.host.clone();
    match blocking(move || host.registry().describe(&name)).await? {
        Ok(info) => Ok(Json(info.into())),
        Err(HostError::NotInstalled { .. } | HostError::InvalidName { .. }) => {
            Err(ApiError::not_found(&context))
        }
        Err(e) => Err(ApiError::bad_request(&context, e)),
    }
}

pub async fn create(
    State(app): State<App>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, String), ApiError> {
    const CONTEXT: &str = "portable plugin create command error";
    let body = reply::body(body, BODY_LIMIT)?;
    let request: Install = reply::json(&body, "portable plugin json")?;
    let name = request.name.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            CONTEXT,
            "invalid name: the field `name` must not be empty",
        ));
    }
    let package = package(&request.file).map_err(|e| ApiError::bad_request(CONTEXT, e))?;
    let _change = app.host.change().await;
    if app.host.registry().describe(&name).is_ok() || app.host.process(&name).is_some() {
        return Err(ApiError::bad_request(
            CONTEXT,
            format!(
                "invalid name {name}: duplicate (a plugin of that name is installed; \
                 PUT /plugins/portables/{name} replaces it)"
            ),
        ));
    }
    let host = app.host.clone();
    let downloads = app.downloads.clone();
    let installed = {
        let name = name.clone();
        blocking(move || {
            package.with_zip(&downloads, host.registry().root(), &name, |zip| {
                host.install(&name, zip)
                    .map_err(|e| format!("fail to install plugin: {e}"))
            })
        })
        .await?
    };
    installed.map_err(|e| ApiError::bad_request(CONTEXT, e))?;
    Ok((
        StatusCode::CREATED,
        format!("portable plugin {name} is created"),
    ))
}

pub async fn update(
    State(app): State<App>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    const CONTEXT: &str = "portable plugin update command error";
    let body = reply::body(body, BODY_LIMIT)?;
    let request: Install = reply::json(&body, "portable plugin json")?;
    let named = request.name.trim();
    if !named.is_empty() && named != name {
        return Err(ApiError::bad_request(
            CONTEXT,
            format!("the body names plugin `{named}` but the URL names `{name}`"),
        ));
    }
    let package = package(&request.file).map_err(|e| ApiError::bad_request(CONTEXT, e))?;
    let _change = app.host.change().await;
    let host = app.host.clone();
    let downloads = app.downloads.clone();
    let updated = {
        let name = name.clone();
        blocking(move || {
            package.with_zip(&downloads, host.registry().root(), &name, |zip| {
                host.update(&name, zip)
                    .map_err(|e| format!("fail to install plugin: {e}"))
            })
        })
        .await?
    };
    updated.map_err(|e| ApiError::bad_request(CONTEXT, e))?;
    Ok(format!("portable plugin {name} is updated"))
}

pub async fn delete(State(app): State<App>, Path(name): Path<String>) -> Result<String, ApiError> {
    let context = format!("delete portable plugin {name} error");
    let _change = app.host.change().await;
    let host = app.host.clone();
    let removed = {
        let name = name.clone();
        blocking(move || {
            let removed = host.registry().remove(&name);
            // Stop the process even if its files were already gone (removed from the command
            // line while the server ran).
            let process = host.take(&name);
            let had_process = process.is_some();
            if let Some(process) = process {
                host::stop(&name, process);
            }
            match removed {
                Err(HostError::NotInstalled { .. }) if had_process => Ok(()),
                other => other,
            }
        })
        .await?
    };
    match removed {
        Ok(()) => Ok(format!("portable plugin {name} is deleted")),
        // eKuiper answers an unknown plugin's delete with 400, not 404.
        Err(HostError::NotInstalled { .. }) => Err(ApiError::bad_request(
            &context,
            format!("portable plugin {name} is not found"),
        )),
        Err(e) => Err(ApiError::bad_request(&context, e)),
    }
}

pub async fn status(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<Status>, ApiError> {
    let context = format!("portable plugin {name} not found");
    let status = match app.host.process(&name) {
        Some(Process::Started(plugin)) => {
            let status = tokio::task::spawn_blocking(move || plugin.status())
                .await
                .map_err(|e| ApiError::internal("reading plugin status", e))?;
            let mut ref_count = std::collections::BTreeMap::new();
            for instance in &status.instances {
                *ref_count.entry(instance.rule_id.clone()).or_insert(0) += 1;
            }
            let (word, err_msg) = match status.phase {
                Phase::Running => ("running", String::new()),
                Phase::Restarting { .. } => (
                    "initializing",
                    status.last_error.clone().unwrap_or_default(),
                ),
                Phase::Failed => ("error", status.last_error.clone().unwrap_or_default()),
                Phase::Stopped => ("stop", String::new()),
            };
            Status {
                ref_count,
                status: word,
                err_msg,
                pid: status.pid,
                restarts: status.restarts,
            }
        }
        Some(Process::Failed(error)) => Status {
            ref_count: Default::default(),
            status: "error",
            err_msg: error,
            pid: None,
            restarts: 0,
        },
        None if app.host.registry().describe(&name).is_ok() => Status {
            ref_count: Default::default(),
            status: "stop",
            err_msg: "installed from the command line: the server starts its process within a \
                      second"
                .into(),
            pid: None,
            restarts: 0,
        },
        None => return Err(ApiError::not_found(&context)),
    };
    Ok(Json(status))
}

/// Runs blocking work (the plugins directory, process starts and stops) off the event loop.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal("a worker task failed", e))
}

/// Where a package comes from.
#[derive(Debug, PartialEq)]
enum Package {
    /// A zip on this machine (a `file://` URL).
    Local(PathBuf),
    /// A zip to download (an `http://` or `https://` URL).
    Remote(String),
}

impl Package {
    /// Downloads a remote package into `dir` (blocking); runs `install` with the zip's path.
    fn with_zip<T>(
        &self,
        downloads: &download::Downloader,
        dir: &std::path::Path,
        name: &str,
        install: impl FnOnce(&std::path::Path) -> Result<T, String>,
    ) -> Result<T, String> {
        match self {
            Package::Local(path) => install(path),
            Package::Remote(url) => {
                let downloaded = downloads.fetch(url, dir, name)?;
                install(downloaded.path())
            }
        }
    }
}

/// The package a `file` URL names, as eKuiper takes it: a zip, by `file://`, `http://` or
/// `https://` URL.
fn package(url: &str) -> Result<Package, String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "invalid uri {url:?}: expected a file://, http:// or https:// URL of a zip, such \
             as file:///var/plugins/mirror.zip"
        ));
    };
    if !url.ends_with(".zip") {
        return Err(format!(
            "invalid uri {url}: the package must be a .zip file"
        ));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "file" => {}
        "http" | "https" => return Ok(Package::Remote(url.to_owned())),
        _ => return Err(format!("invalid uri {url}: unsupported scheme `{scheme}`")),
    }
    // `file:///path` or `file://localhost/path`; no other host is this machine.
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(format!(
            "invalid uri {url}: a file:// URL needs an absolute path on this machine, such as \
             file:///var/plugins/mirror.zip"
        ));
    }
    let path = percent_decode(path).ok_or_else(|| format!("invalid uri {url}: bad %-escape"))?;
    Ok(Package::Local(PathBuf::from(path)))
}

/// `text` with its `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_urls() {
        let local = |path: &str| Package::Local(PathBuf::from(path));
        assert_eq!(
            package("file:///var/p/mirror.zip").unwrap(),
            local("/var/p/mirror.zip")
        );
        assert_eq!(
            package("file://localhost/a%20b/m.zip").unwrap(),
            local("/a b/m.zip")
        );
        assert_eq!(
            package("http://h:8/m.zip").unwrap(),
            Package::Remote("http://h:8/m.zip".into())
        );
        let refused = |url: &str, needle: &str| {
            let error = package(url).unwrap_err();
            assert!(error.contains(needle), "{needle:?} not in {error:?}");
        };
        assert_eq!(
            package("https://h/p/m.zip").unwrap(),
            Package::Remote("https://h/p/m.zip".into())
        );
        refused("file://relative/m.zip", "absolute");
        refused("file:///m.tar", ".zip");
        refused("/m.zip", "file://");
        refused("file:///m%2.zip", "escape");
        refused("ftp:///m.zip", "ftp");
    }
}
