//! `shmplug plugins ...`.

use std::path::PathBuf;

use clap::Subcommand;
use shmplug_host::registry::{InstallOptions, Listed, PluginInfo, Registry};
use shmplug_host::{Plugin, PluginSpec, SupervisorConfig};

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Start a new plugin crate in ./NAME: a source, a sink and a function, the manifest
    /// (NAME.json) and tests through the SDK's test harness; `cargo test` in it passes as
    /// generated. Until the shmplug crates are published, it depends on the SDK by path (this
    /// checkout's `sdk`, or --sdk).
    New {
        /// The plugin's name (lowercase letters, digits, `_`): the crate, executable and
        /// manifest name.
        name: String,
        /// The shmplug SDK directory the crate depends on [default: the `sdk` of the checkout
        /// this shmplug was built from].
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
    /// Install a plugin from a directory or a zip file. The package must hold `{name}.json`
    /// (eKuiper's fields: version, language, executable, sources, sinks, functions) at its
    /// root, beside the executable. The name is the directory's name or the zip's file stem.
    Install {
        /// The package: a directory or a `.zip` file.
        package: PathBuf,
        /// Install under this name instead.
        #[arg(long)]
        name: Option<String>,
        /// Replace an installed plugin of the same name.
        #[arg(long)]
        force: bool,
        /// Do not start the executable to compare the symbols it offers with the manifest's
        /// (for an executable that cannot run on this machine).
        #[arg(long)]
        no_check: bool,
        /// Run the package's install.sh (an eKuiper package's set-up script) in the unpacked
        /// plugin before the check, as `/bin/sh install.sh ARGS...`; without this flag it is
        /// not run.
        #[arg(long)]
        run_install_sh: bool,
        /// An argument for install.sh (eKuiper's `shellParas`); repeat for more.
        #[arg(long = "install-arg", value_name = "ARG", requires = "run_install_sh")]
        install_args: Vec<String>,
    },
    /// List installed plugins (and directories that hold no valid plugin).
    List,
    /// Show one plugin's manifest and files.
    Describe {
        /// The plugin.
        name: String,
    },
    /// Replace an installed plugin with a new package (a new version).
    Update {
        /// The plugin.
        name: String,
        /// The new package: a directory or a `.zip` file.
        package: PathBuf,
        /// Do not start the executable to compare its symbols with the manifest's.
        #[arg(long)]
        no_check: bool,
    },
    /// Remove an installed plugin and its files.
    Remove {
        /// The plugin.
        name: String,
    },
}

/// `shmplug plugins new`, which needs no plugins directory.
pub fn new(name: &str, sdk: Option<&std::path::Path>) -> crate::error::Result<()> {
    let (root, files) = crate::scaffold::new_plugin(name, std::path::Path::new("."), sdk)?;
    println!("created the plugin crate {}:", root.display());
    for file in files {
        println!("  {file}");
    }
    println!(
        "It depends on the shmplug SDK by path (see its Cargo.toml) until the shmplug crates are \
         published; change `path` there if you move that checkout."
    );
    println!("Next: cd {} && cargo test", root.display());
    println!(
        "Then package it (the executable and {name}.json side by side), install it with \
         `shmplug plugins install`, and run it from a pipeline file: see docs/guide.md in the \
         shmplug repository."
    );
    Ok(())
}

pub fn execute(registry: &Registry, command: PluginsCommand) -> crate::error::Result<()> {
    match command {
        PluginsCommand::New { name, sdk } => new(&name, sdk.as_deref())?,
        PluginsCommand::Install {
            package,
            name,
            force,
            no_check,
            run_install_sh,
            install_args,
        } => {
            let options = InstallOptions { name, force };
            let script = run_install_sh.then_some(install_args.as_slice());
            let info = install_with_script(registry, &package, &options, no_check, script)?;
            println!(
                "installed {} {} in {}",
                info.name,
                info.manifest.version,
                info.dir.display()
            );
        }
        PluginsCommand::List => {
            let listed = registry.list()?;
            if listed.is_empty() {
                println!("no plugins installed in {}", registry.root().display());
            }
            for entry in listed {
                match entry {
                    Listed::Plugin(info) => println!("{}", summary(&info)),
                    Listed::Broken { name, error } => println!("{name:<20} BROKEN: {error}"),
                }
            }
        }
        PluginsCommand::Describe { name } => describe(&registry.describe(&name)?),
        PluginsCommand::Update {
            name,
            package,
            no_check,
        } => {
            // As `Registry::update`, with the check.
            registry.describe(&name)?;
            let options = InstallOptions {
                name: Some(name),
                force: true,
            };
            let info = install(registry, &package, &options, no_check)?;
            println!("updated {} to {}", info.name, info.manifest.version);
        }
        PluginsCommand::Remove { name } => {
            registry.remove(&name)?;
            println!("removed {name}");
        }
    }
    Ok(())
}

/// Starts the plugin unpacked at `info.dir`, waits for its hello, shuts it down, and compares
/// the symbols it announced with its manifest's.
fn check_symbols(info: &PluginInfo) -> shmplug_host::Result<()> {
    let plugin = Plugin::start(PluginSpec::from_info(info), SupervisorConfig::default())?;
    let hello = plugin.hello();
    plugin.shutdown();
    match hello {
        Some(hello) => info.manifest.check_hello(&info.name, &hello),
        None => Ok(()),
    }
}

fn summary(info: &PluginInfo) -> String {
    let m = &info.manifest;
    format!(
        "{:<20} {:<10} {:<8} sources [{}] sinks [{}] functions [{}]",
        info.name,
        m.version,
        m.language,
        m.sources.join(", "),
        m.sinks.join(", "),
        m.functions.join(", ")
    )
}

fn describe(info: &PluginInfo) {
    let m = &info.manifest;
    println!("name:       {}", info.name);
    println!("version:    {}", m.version);
    println!("language:   {}", m.language);
    println!("executable: {}", info.executable.display());
    println!("directory:  {}", info.dir.display());
    println!("sources:    {}", m.sources.join(", "));
    println!("sinks:      {}", m.sinks.join(", "));
    println!("functions:  {}", m.functions.join(", "));
}

/// Installs `package` as `options` say, checking its manifest against its executable's hello
/// unless `no_check`.
fn install(
    registry: &Registry,
    package: &std::path::Path,
    options: &InstallOptions,
    no_check: bool,
) -> crate::error::Result<PluginInfo> {
    install_with_script(registry, package, options, no_check, None)
}

/// As [`install`], first running the package's install.sh with `script`'s arguments if given
/// (and saying that it was not run otherwise).
fn install_with_script(
    registry: &Registry,
    package: &std::path::Path,
    options: &InstallOptions,
    no_check: bool,
    script: Option<&[String]>,
) -> crate::error::Result<PluginInfo> {
    let info = registry.install_checked(package, options, |info| {
        match script {
            Some(args) => shmplug_host::ekuiper::run_install_script(&info.name, &info.dir, args)?,
            None if shmplug_host::ekuiper::has_install_script(&info.dir) => eprintln!(
                "note: the package carries an install.sh, which was not run (pass \
                 --run-install-sh to run it)"
            ),
            None => {}
        }
        if no_check {
            Ok(())
        } else {
            check_symbols(info)
        }
    })?;
    Ok(info)
}
