//! What `shmplug serve` holds: the plugins directory it shares with the command line, and one
//! supervised process per plugin it started (every valid plugin at start-up, each plugin
//! installed through the API, and each one [`rescan`](Host::rescan) finds installed from the
//! command line).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use shmplug_host::registry::{InstallOptions, Listed, PluginInfo, Registry};
use shmplug_host::{Plugin, PluginSpec, PluginStatus, SupervisorConfig};

/// One plugin's process as the server knows it.
#[derive(Debug, Clone)]
pub enum Process {
    /// Supervised (running, restarting or given up: see its status).
    Started(Arc<Plugin>),
    /// Its process could not be started: why.
    Failed(String),
}

/// The server's plugins. Changes (install, update, delete) are serialised by `changes`, so two
/// requests for one name cannot interleave; reads never wait for a change to finish.
#[derive(Debug)]
pub struct Host {
    registry: Registry,
    config: SupervisorConfig,
    processes: Mutex<BTreeMap<String, Process>>,
    changes: tokio::sync::Mutex<()>,
    /// Plugins with a process whose directory the last rescan did not find.
    missing: Mutex<BTreeSet<String>>,
    /// The inode of each plugin's directory when its process was started: an install or an
    /// update swaps the directory in a rename, so a new inode is a new version.
    versions: Mutex<BTreeMap<String, u64>>,
}

impl Host {
    pub fn new(registry: Registry, config: SupervisorConfig) -> Host {
        Host {
            registry,
            config,
            processes: Mutex::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(()),
            missing: Mutex::new(BTreeSet::new()),
            versions: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Held while a request changes the plugins.
    pub async fn change(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    fn processes(&self) -> MutexGuard<'_, BTreeMap<String, Process>> {
        // A panic while holding it leaves a map that is still consistent (single inserts and
        // removes), so a poisoned lock is used as it is.
        self.processes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The process of plugin `name`, if the server started (or tried to start) one.
    pub fn process(&self, name: &str) -> Option<Process> {
        self.processes().get(name).cloned()
    }

    /// Every started plugin's status, and the names of those whose process did not start.
    pub fn statuses(&self) -> (Vec<PluginStatus>, Vec<String>) {
        let mut started: Vec<Arc<Plugin>> = Vec::new();
        let mut failed = Vec::new();
        for (name, process) in self.processes().iter() {
            match process {
                Process::Started(plugin) => started.push(plugin.clone()),
                Process::Failed(_) => failed.push(name.clone()),
            }
        }
        (started.iter().map(|p| p.status()).collect(), failed)
    }

    /// Starts a process for every valid plugin in the directory (blocking: each waits for its
    /// plugin's hello). A plugin that fails is recorded with its error and logged.
    pub fn start_installed(&self) {
        let listed = match self.registry.list() {
            Ok(listed) => listed,
            Err(e) => {
                tracing::error!("cannot list the installed plugins: {e}");
                return;
            }
        };
        for entry in listed {
            match entry {
                Listed::Plugin(info) => {
                    let process = self.start(&info);
                    self.processes().insert(info.name, process);
                }
                Listed::Broken { name, error } => {
                    tracing::warn!("not starting `{name}`: {error}");
                }
            }
        }
    }

    /// Brings the processes in line with the plugins directory, which the command line shares
    /// (blocking; the caller holds [`change`](Self::change)): starts a process for each valid
    /// plugin that has none, as an install through the API does, swaps the process of one
    /// whose directory was replaced (`shmplug plugins update`) for the new version's, as an
    /// update does, and stops the process of each plugin whose directory is gone, as a delete
    /// does. A plugin is taken as gone when
    /// two rescans in a row miss it: `shmplug plugins update` swaps a plugin's directory in
    /// two renames, which one rescan may fall between. A plugin that is broken is left as it
    /// is.
    pub fn rescan(&self) {
        let listed = match self.registry.list() {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!("cannot list the installed plugins: {e}");
                return;
            }
        };
        let mut present = BTreeSet::new();
        for entry in listed {
            match entry {
                Listed::Plugin(info) => {
                    present.insert(info.name.clone());
                    let changed =
                        self.inode(&info.name) != self.lock_versions().get(&info.name).copied();
                    match self.process(&info.name) {
                        None => {
                            tracing::info!(
                                "plugin `{}` was installed from outside the server: starting it",
                                info.name
                            );
                            let process = self.start(&info);
                            self.processes().insert(info.name, process);
                        }
                        Some(Process::Started(plugin)) if changed => {
                            tracing::info!(
                                "plugin `{}` was updated from outside the server to {}: \
                                 swapping its process",
                                info.name,
                                info.manifest.version
                            );
                            self.remember(&info.name);
                            if let Err(e) = plugin.update(PluginSpec::from_info(&info)) {
                                tracing::warn!(
                                    "the new version of `{}` did not start: {e}",
                                    info.name
                                );
                            }
                        }
                        Some(Process::Failed(_)) if changed => {
                            tracing::info!(
                                "plugin `{}` was updated from outside the server: starting it",
                                info.name
                            );
                            let process = self.start(&info);
                            self.processes().insert(info.name, process);
                        }
                        Some(_) => {}
                    }
                }
                Listed::Broken { name, .. } => {
                    present.insert(name);
                }
            }
        }
        let absent: BTreeSet<String> = self
            .processes()
            .keys()
            .filter(|name| !present.contains(*name))
            .cloned()
            .collect();
        let missed_before = std::mem::replace(
            &mut *self.missing.lock().unwrap_or_else(|e| e.into_inner()),
            absent.clone(),
        );
        for name in absent.intersection(&missed_before) {
            if let Some(process) = self.take(name) {
                tracing::info!("plugin `{name}` was removed from outside the server: stopping it");
                stop(name, process);
            }
        }
    }

    /// Starts `info`'s process (blocking until its hello or failure).
    fn start(&self, info: &PluginInfo) -> Process {
        self.remember(&info.name);
        match Plugin::start(PluginSpec::from_info(info), self.config.clone()) {
            Ok(plugin) => {
                tracing::info!("started plugin `{}`", info.name);
                Process::Started(Arc::new(plugin))
            }
            Err(e) => {
                tracing::warn!("cannot start plugin `{}`: {e}", info.name);
                Process::Failed(e.to_string())
            }
        }
    }

    /// Installs the zip at `package` as `name` and starts its process (blocking). If the
    /// process cannot start, the plugin is removed again and the error returned: a failed
    /// install leaves nothing behind.
    pub fn install(&self, name: &str, package: &std::path::Path) -> Result<PluginInfo, String> {
        let options = InstallOptions {
            name: Some(name.to_owned()),
            force: false,
        };
        let info = self
            .registry
            .install(package, &options)
            .map_err(|e| e.to_string())?;
        self.remember(name);
        match Plugin::start(PluginSpec::from_info(&info), self.config.clone()) {
            Ok(plugin) => {
                tracing::info!("installed and started plugin `{name}`");
                self.processes()
                    .insert(name.to_owned(), Process::Started(Arc::new(plugin)));
                Ok(info)
            }
            Err(e) => {
                if let Err(remove) = self.registry.remove(name) {
                    tracing::warn!("cannot remove `{name}` after its failed start: {remove}");
                }
                Err(format!("its process did not start: {e}"))
            }
        }
    }

    /// Replaces plugin `name` with the zip at `package` (blocking). A running process is
    /// swapped for the new version's (its instances move over); otherwise a process is started.
    pub fn update(&self, name: &str, package: &std::path::Path) -> Result<PluginInfo, String> {
        let options = InstallOptions {
            name: Some(name.to_owned()),
            force: true,
        };
        let info = self
            .registry
            .install(package, &options)
            .map_err(|e| e.to_string())?;
        match self.process(name) {
            Some(Process::Started(plugin)) => {
                self.remember(name);
                plugin
                    .update(PluginSpec::from_info(&info))
                    .map_err(|e| format!("the new version's process did not start: {e}"))?;
                tracing::info!("updated plugin `{name}` to {}", info.manifest.version);
            }
            _ => {
                let process = self.start(&info);
                let failed = match &process {
                    Process::Failed(e) => Some(e.clone()),
                    Process::Started(_) => None,
                };
                self.processes().insert(name.to_owned(), process);
                if let Some(e) = failed {
                    return Err(format!("its process did not start: {e}"));
                }
            }
        }
        Ok(info)
    }

    /// Takes plugin `name`'s process out of the server (the caller stops it).
    pub fn take(&self, name: &str) -> Option<Process> {
        self.lock_versions().remove(name);
        self.processes().remove(name)
    }

    /// The inode of plugin `name`'s directory now, if it has one.
    fn inode(&self, name: &str) -> Option<u64> {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(self.registry.root().join(name))
            .ok()
            .map(|m| m.ino())
    }

    /// Records the version of plugin `name` being started (see `versions`).
    fn remember(&self, name: &str) {
        match self.inode(name) {
            Some(inode) => self.lock_versions().insert(name.to_owned(), inode),
            None => self.lock_versions().remove(name),
        };
    }

    fn lock_versions(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes every process out of the server (the caller stops them).
    pub fn take_all(&self) -> Vec<(String, Process)> {
        std::mem::take(&mut *self.processes()).into_iter().collect()
    }
}

/// Stops `process` (blocking until it is reaped, unless a request still reads its status: then
/// it stops as that request ends). Pipelines using it fail, as an eKuiper rule does.
pub fn stop(name: &str, process: Process) {
    if let Process::Started(plugin) = process {
        match Arc::try_unwrap(plugin) {
            Ok(plugin) => {
                plugin.shutdown();
                tracing::info!("stopped plugin `{name}`");
            }
            Err(_) => tracing::info!("plugin `{name}` stops as soon as its last reader is done"),
        }
    }
}
