//! One serde struct per binary, filled from its defaults, then an optional
//! `--config FILE` (TOML), then command-line flags: each setting is written
//! once, as a documented field.
//!
//! The struct derives `Serialize`, `Deserialize` (with `#[serde(default,
//! deny_unknown_fields)]`), `Default` and `schemars::JsonSchema`. [`Loader`]
//! builds the clap command at run time from the struct's schema: one
//! `--kebab-case` flag per leaf field, nested tables flattened
//! (`heartbeat.wired_ms` is `--heartbeat-wired-ms`, listed under a
//! `[heartbeat]` heading), its help the field's doc comment and its default
//! the value of `Config::default()` (an `Option` that defaults to `None`
//! shows none). A flag's text is read as a TOML value of the field's kind
//! (integer, float, bool, string, enum name, or a comma-separated list),
//! set over the file's table, and the result is deserialised once; a value
//! that does not fit is an error naming the flag, or the file and line.
//!
//! Precedence: flag > shorthand flag (see [`Loader::shorthand`]) > file >
//! default. A list flag replaces the file's list. A flag cannot turn an
//! `Option` back to `None`, and a TOML integer is an `i64`, so a `u64`
//! setting holds at most `i64::MAX`.
//!
//! ```
//! use common::config::Loader;
//! use serde::{Deserialize, Serialize};
//!
//! /// Settings of a demo server.
//! #[derive(Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
//! #[serde(default, deny_unknown_fields)]
//! struct Config {
//!     /// Worker threads; 0 means one per core.
//!     threads: usize,
//!     /// Address of the metrics endpoint.
//!     metrics: Option<std::net::SocketAddr>,
//!     /// Where messages are kept.
//!     store: Store,
//!     /// Upstream servers, tried in order.
//!     upstream: Vec<std::net::SocketAddr>,
//!     /// Retry policy.
//!     retry: Retry,
//! }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
//! #[serde(rename_all = "snake_case")]
//! enum Store { Memory, Disk }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
//! #[serde(default, deny_unknown_fields)]
//! struct Retry {
//!     /// First delay.
//!     initial_ms: u32,
//!     /// Growth factor per attempt.
//!     factor: f32,
//! }
//!
//! impl Default for Config {
//!     fn default() -> Self {
//!         Config { threads: 0, metrics: None, store: Store::Memory, upstream: vec![], retry: Retry::default() }
//!     }
//! }
//! impl Default for Retry {
//!     fn default() -> Self { Retry { initial_ms: 100, factor: 2.0 } }
//! }
//!
//! let loaded = Loader::<Config>::new("demo")
//!     .try_load_from(["demo", "--store", "disk", "--upstream", "127.0.0.1:1,127.0.0.1:2",
//!                     "--retry-initial-ms", "250", "--metrics", "127.0.0.1:9100"])?;
//! let cfg = loaded.config;
//! assert_eq!(cfg.store, Store::Disk);
//! assert_eq!(cfg.upstream.len(), 2);
//! assert_eq!(cfg.retry, Retry { initial_ms: 250, factor: 2.0 });
//! assert_eq!(cfg.metrics, Some("127.0.0.1:9100".parse()?));
//!
//! let help = Loader::<Config>::new("demo").long_help();
//! assert!(help.contains("--retry-factor <NUM>"));
//! assert!(help.contains("[default: 2]"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod fields;

use std::ffi::OsString;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use clap::builder::{PossibleValue, PossibleValuesParser, Resettable, StyledStr, ValueParser};
use clap::{Arg, ArgAction, ArgMatches, Command, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;

use fields::{Field, Kind};

/// What a config struct must implement (all derivable).
pub trait Settings: Serialize + DeserializeOwned + Default + schemars::JsonSchema {}
impl<T: Serialize + DeserializeOwned + Default + schemars::JsonSchema> Settings for T {}

/// Why the configuration could not be loaded. Every variant but
/// [`ConfigError::Schema`] is the operator's to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The command line does not parse, or asked for `--help` or
    /// `--version`: [`ConfigError::exit`] prints it as clap does.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The `--config` file could not be read.
    #[error("reading the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML, names an unknown key, or has
    /// a value that does not fit (the message gives line and key).
    #[error("config file {path}: {source}")]
    File {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    /// A flag's value does not fit its setting.
    #[error("invalid value {value:?} for {flag}: {message}")]
    Flag {
        flag: String,
        value: String,
        message: String,
    },
    /// The merged settings do not fit for another reason (a file value that
    /// only fails next to a flag's).
    #[error("setting {key}: {message}")]
    Setting { key: String, message: String },
    /// The config struct or the binary's extra flags cannot be turned into
    /// a command line (a bug in the binary, not the operator's fault).
    #[error("internal: the settings cannot be loaded: {0}")]
    Schema(String),
}

impl ConfigError {
    /// Prints the error (help and version to stdout, exit 0, as clap does)
    /// and exits: 2 for the operator's errors, 70 for an internal one.
    pub fn exit(self) -> ! {
        match self {
            ConfigError::Cli(e) => e.exit(),
            e @ ConfigError::Schema(_) => {
                eprintln!("error: {e}");
                std::process::exit(70)
            }
            e => {
                eprintln!("error: {e}");
                std::process::exit(2)
            }
        }
    }
}

/// A loaded configuration.
#[derive(Debug)]
pub struct Loaded<C> {
    pub config: C,
    /// The file given with `--config`, if any.
    pub file: Option<PathBuf>,
    /// The parsed command line, for extra arguments the binary added with
    /// [`Loader::with_command`].
    pub matches: ArgMatches,
}

/// What the command line asked for, in a binary with subcommands.
#[derive(Debug)]
pub enum Invocation<C, S> {
    /// No subcommand: run the server with this configuration.
    Run(Loaded<C>),
    /// A subcommand (its own flags parsed by its clap derive).
    Sub(S),
}

/// A flag that sets several fields to one value.
#[derive(Debug)]
struct Shorthand {
    flag: String,
    fields: Vec<usize>,
}

/// Builds the command line of a config struct `C` and loads it.
#[derive(Debug)]
pub struct Loader<C> {
    command: Command,
    fields: Vec<Field>,
    shorthands: Vec<Shorthand>,
    defaults: toml::Table,
    /// Errors found while building, reported when loading.
    problems: Vec<String>,
    config: PhantomData<fn() -> C>,
}

const CONFIG_ARG: &str = "config";

impl<C: Settings> Loader<C> {
    /// The command line for `C`, named `name`: `--config` and one flag per
    /// setting.
    pub fn new(name: &'static str) -> Self {
        let mut problems = Vec::new();
        let schema = schemars::schema_for!(C);
        let fields = fields::collect(schema.as_value()).unwrap_or_else(|e| {
            problems.push(e);
            Vec::new()
        });
        let defaults = toml::Table::try_from(C::default()).unwrap_or_else(|e| {
            problems.push(format!("the defaults do not serialise to TOML: {e}"));
            toml::Table::new()
        });
        let mut command = Command::new(name).args_override_self(true).arg(
            Arg::new(CONFIG_ARG)
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML file with any of these settings; flags override it")
                .long_help(config_help(&fields)),
        );
        for f in &fields {
            command = command.arg(arg(f, lookup(&defaults, &f.key)));
        }
        Loader {
            command,
            fields,
            shorthands: Vec::new(),
            defaults,
            problems,
            config: PhantomData,
        }
    }

    /// Changes the clap command: `about`, `version`, extra arguments (read
    /// them back from [`Loaded::matches`]).
    pub fn with_command(mut self, f: impl FnOnce(Command) -> Command) -> Self {
        self.command = f(self.command);
        self
    }

    /// Adds `--alias` as another name of the flag of setting `key`
    /// (dotted: `rate.per_sec`).
    pub fn alias(mut self, key: &str, alias: &'static str) -> Self {
        match self.fields.iter().find(|f| f.dotted() == key) {
            Some(f) => {
                let id = f.dotted();
                self.command = self.command.mut_arg(id, |a| a.visible_alias(alias));
            }
            None => self
                .problems
                .push(format!("alias --{alias}: no setting {key}")),
        }
        self
    }

    /// Adds `--flag` that sets each of `keys` (dotted, all of one kind) to
    /// its value. A flag naming one of those settings itself wins over it.
    pub fn shorthand(mut self, flag: &'static str, help: &'static str, keys: &[&str]) -> Self {
        let mut idx = Vec::new();
        for k in keys {
            match self.fields.iter().position(|f| f.dotted() == *k) {
                Some(i) => idx.push(i),
                None => self
                    .problems
                    .push(format!("shorthand --{flag}: no setting {k}")),
            }
        }
        let Some(&first) = idx.first() else {
            self.problems
                .push(format!("shorthand --{flag} sets nothing"));
            return self;
        };
        let f = &self.fields[first];
        if idx.iter().any(|&i| self.fields[i].kind != f.kind) {
            self.problems
                .push(format!("shorthand --{flag}: settings of different kinds"));
        }
        let sets: Vec<String> = idx
            .iter()
            .map(|&i| format!("--{}", self.fields[i].flag()))
            .collect();
        let id = format!("shorthand:{flag}");
        let help = format!("{help} (sets {})", sets.join(", "));
        let mut a = Arg::new(id)
            .long(flag)
            .value_name(f.kind.value_name(f))
            .help(help);
        if let Some(t) = f.table().filter(|t| {
            idx.iter()
                .all(|&i| self.fields[i].table().as_ref() == Some(t))
        }) {
            a = a.help_heading(t);
        }
        a = with_kind(a, &f.kind);
        self.command = self.command.arg(a);
        self.shorthands.push(Shorthand {
            flag: format!("--{flag}"),
            fields: idx,
        });
        self
    }

    /// The clap command as built so far.
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// What `--help` prints.
    pub fn long_help(&self) -> String {
        self.command.clone().render_long_help().to_string()
    }

    /// Flags of settings without a doc comment (a binary's test asserts
    /// there are none).
    pub fn undocumented(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| f.doc.is_none())
            .map(|f| format!("--{}", f.flag()))
            .collect()
    }

    /// Parses `std::env::args_os()` and loads; on error prints it and
    /// exits (like clap's `parse`).
    pub fn load(self) -> Loaded<C> {
        self.try_load_from(std::env::args_os())
            .unwrap_or_else(|e| e.exit())
    }

    /// Parses `args` (the first is the program name) and loads.
    pub fn try_load_from<I, T>(self, args: I) -> Result<Loaded<C>, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = self.checked_command()?.try_get_matches_from(args)?;
        self.load_matches(matches)
    }

    /// [`Loader::try_dispatch_from`] on `std::env::args_os()`, exiting on
    /// error.
    pub fn dispatch<S: Subcommand>(self) -> Invocation<C, S> {
        self.try_dispatch_from(std::env::args_os())
            .unwrap_or_else(|e| e.exit())
    }

    /// Parses `args` with the subcommands of `S` (a clap derive
    /// `Subcommand` enum; a subcommand's flags cannot mix with the
    /// server's). Without a subcommand, loads the configuration.
    pub fn try_dispatch_from<S, I, T>(self, args: I) -> Result<Invocation<C, S>, ConfigError>
    where
        S: Subcommand,
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let base = self.checked_command()?;
        // The derive would put the enum's doc comment in the binary's about.
        let keep = |s: Option<&StyledStr>| s.cloned().map_or(Resettable::Reset, Resettable::Value);
        let (about, long_about) = (keep(base.get_about()), keep(base.get_long_about()));
        let command = S::augment_subcommands(base)
            .about(about)
            .long_about(long_about)
            .args_conflicts_with_subcommands(true);
        let matches = command.try_get_matches_from(args)?;
        if matches.subcommand_name().is_some() {
            return Ok(Invocation::Sub(S::from_arg_matches(&matches)?));
        }
        self.load_matches(matches).map(Invocation::Run)
    }

    /// The command, once the problems found while building are reported
    /// and no flag name is used twice.
    fn checked_command(&self) -> Result<Command, ConfigError> {
        let mut problems = self.problems.clone();
        let mut seen = std::collections::HashSet::new();
        for a in self.command.get_arguments() {
            let names = a
                .get_long()
                .into_iter()
                .chain(a.get_all_aliases().into_iter().flatten());
            for n in names {
                if !seen.insert(n.to_owned()) || n == "help" || n == "version" {
                    problems.push(format!("flag --{n} is defined twice"));
                }
            }
        }
        if problems.is_empty() {
            Ok(self.command.clone())
        } else {
            Err(ConfigError::Schema(problems.join("; ")))
        }
    }

    fn load_matches(self, matches: ArgMatches) -> Result<Loaded<C>, ConfigError> {
        let file = matches.get_one::<PathBuf>(CONFIG_ARG).cloned();
        let mut table = self.defaults.clone();
        if let Some(path) = &file {
            merge(&mut table, read_file::<C>(path)?);
        }
        // (key, flag, text) of each setting given on the command line.
        let mut given: Vec<(Vec<String>, String, String)> = Vec::new();
        for s in &self.shorthands {
            let id = format!("shorthand:{}", &s.flag[2..]);
            if let Some(raw) = matches.get_one::<String>(&id) {
                for &i in &s.fields {
                    let f = &self.fields[i];
                    let v = f.kind.parse(&[raw]).map_err(|message| ConfigError::Flag {
                        flag: s.flag.clone(),
                        value: raw.clone(),
                        message,
                    })?;
                    set(&mut table, &f.key, v);
                    given.push((f.key.clone(), s.flag.clone(), raw.clone()));
                }
            }
        }
        for f in &self.fields {
            let Some(raws) = matches.get_many::<String>(&f.dotted()) else {
                continue;
            };
            let raws: Vec<&str> = raws.map(String::as_str).collect();
            let flag = format!("--{}", f.flag());
            let text = raws.join(",");
            let v = f.kind.parse(&raws).map_err(|message| ConfigError::Flag {
                flag: flag.clone(),
                value: text.clone(),
                message,
            })?;
            set(&mut table, &f.key, v);
            given.push((f.key.clone(), flag, text));
        }
        let config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| blame(e, &given))?;
        Ok(Loaded {
            config,
            file,
            matches,
        })
    }
}

/// The long help of `--config`, with an example from the struct itself.
fn config_help(fields: &[Field]) -> String {
    let mut help = String::from(
        "TOML file with any of these settings; flags override it. \
         A flag's key is its name with '_' for '-'",
    );
    match fields.iter().find_map(|f| Some((f, f.table()?))) {
        Some((f, table)) => {
            let name = f.key.last().map_or("", String::as_str);
            help.push_str(&format!(
                ", in the table of its heading: --{} is `{name}` under `{table}`.",
                f.flag()
            ));
        }
        None => help.push('.'),
    }
    help
}

/// The clap argument of a setting.
fn arg(f: &Field, default: Option<&toml::Value>) -> Arg {
    let default = default.map(show);
    let first = f
        .doc
        .as_deref()
        .and_then(|d| d.split("\n\n").next())
        .unwrap_or("");
    let (help, long_help) = match &default {
        Some(d) => (
            format!("{first} [default: {d}]"),
            format!("{}\n\n[default: {d}]", f.doc.as_deref().unwrap_or("")),
        ),
        None => (first.to_owned(), f.doc.clone().unwrap_or_default()),
    };
    let mut a = Arg::new(f.dotted())
        .long(f.flag())
        .value_name(f.kind.value_name(f))
        .help(help.trim().to_owned())
        .long_help(long_help.trim().to_owned());
    if let Some(t) = f.table() {
        a = a.help_heading(t);
    }
    with_kind(a, &f.kind)
}

/// Sets how many values an argument takes, and which.
fn with_kind(a: Arg, kind: &Kind) -> Arg {
    let a = a.action(ArgAction::Set).value_parser(ValueParser::string());
    match kind {
        // `--flag` alone means true; `--flag false` is accepted too.
        Kind::Bool => a
            .num_args(0..=1)
            .default_missing_value("true")
            .value_parser(PossibleValuesParser::new(["true", "false"])),
        Kind::Enum(values) => a.value_parser(PossibleValuesParser::new(values.iter().map(
            |(v, doc)| match doc {
                Some(d) => PossibleValue::new(v.clone()).help(d.clone()),
                None => PossibleValue::new(v.clone()),
            },
        ))),
        Kind::List(item) => with_kind(a, item)
            .action(ArgAction::Append)
            .value_delimiter(','),
        Kind::Int | Kind::Float => a.allow_negative_numbers(true),
        Kind::Str | Kind::Toml => a,
    }
}

/// A default as `--help` shows it.
fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) if s.is_empty() => "\"\"".into(),
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) if a.is_empty() => "none".into(),
        toml::Value::Array(a) => a.iter().map(show).collect::<Vec<_>>().join(","),
        // An f32 default is widened to f64; show the f32's short form.
        toml::Value::Float(x) if f64::from(*x as f32) == *x => (*x as f32).to_string(),
        other => other.to_string(),
    }
}

/// Reads and checks the `--config` file against `C` (so an unknown key or a
/// bad value is reported with its line), then returns its table.
fn read_file<C: DeserializeOwned>(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = |e: toml::de::Error| ConfigError::File {
        path: path.to_owned(),
        source: Box::new(e),
    };
    toml::from_str::<C>(&text).map_err(bad)?;
    toml::from_str::<toml::Table>(&text).map_err(bad)
}

fn lookup<'a>(table: &'a toml::Table, key: &[String]) -> Option<&'a toml::Value> {
    let (last, parents) = key.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(p)?.as_table()?;
    }
    t.get(last)
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Sets `key` (a path of tables, then a field) in `table`.
fn set(table: &mut toml::Table, key: &[String], value: toml::Value) {
    let Some((last, parents)) = key.split_last() else {
        return;
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(inner) = entry else {
            return;
        };
        t = inner;
    }
    t.insert(last.clone(), value);
}

/// The error of the merged deserialisation, naming the flag that set the
/// key when one did.
fn blame(
    e: serde_path_to_error::Error<toml::de::Error>,
    given: &[(Vec<String>, String, String)],
) -> ConfigError {
    let path: Vec<String> = e
        .path()
        .iter()
        .map_while(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        })
        .collect();
    // The first line: toml adds "in `key`", which the error names already.
    let message = e
        .inner()
        .to_string()
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    match given
        .iter()
        .filter(|(k, ..)| path.starts_with(k))
        .max_by_key(|(k, ..)| k.len())
    {
        Some((_, flag, value)) => ConfigError::Flag {
            flag: flag.clone(),
            value: value.clone(),
            message,
        },
        None => ConfigError::Setting {
            key: path.join("."),
            message,
        },
    }
}

#[cfg(test)]
mod tests;
