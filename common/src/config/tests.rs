use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::*;

/// Settings shaped like a binary's: a nested table, an `Option`, an enum, a
/// list, a float.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
struct Cfg {
    /// Listen address.
    ///
    /// Every worker binds it.
    listen: SocketAddr,
    /// Worker threads (0: one per core).
    threads: usize,
    /// File holding the secret.
    secret_file: Option<PathBuf>,
    /// Logic servers.
    logic: Vec<SocketAddr>,
    /// Where messages are kept.
    store: Store,
    /// TCP_NODELAY on client sockets.
    nodelay: bool,
    /// Heartbeat settings.
    heartbeat: Heartbeat,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Store {
    /// In memory only.
    Memory,
    /// On the local disk.
    Disk,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
struct Heartbeat {
    /// Starting interval for wired clients.
    wired_ms: u32,
    /// Starting interval for wifi clients.
    wifi_ms: u32,
    /// Adapt the interval.
    adaptive: bool,
    /// Factor when shrinking.
    shrink: f32,
    /// A fixed idle timeout.
    idle_timeout_ms: Option<u32>,
}

impl Default for Cfg {
    fn default() -> Self {
        Cfg {
            listen: SocketAddr::from(([0, 0, 0, 0], 7000)),
            threads: 0,
            secret_file: None,
            logic: Vec::new(),
            store: Store::Memory,
            nodelay: true,
            heartbeat: Heartbeat::default(),
        }
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            wired_ms: 10_000,
            wifi_ms: 30_000,
            adaptive: true,
            shrink: 0.8,
            idle_timeout_ms: None,
        }
    }
}

/// Subcommands of the test binary.
#[derive(Debug, PartialEq, clap::Subcommand)]
enum Sub {
    /// Print a token.
    Token {
        #[arg(long)]
        uin: u64,
    },
}

fn loader() -> Loader<Cfg> {
    Loader::<Cfg>::new("gw")
        .shorthand(
            "heartbeat-ms",
            "Starting interval for every network",
            &["heartbeat.wired_ms", "heartbeat.wifi_ms"],
        )
        .alias("heartbeat.adaptive", "adaptive-heartbeat")
}

fn load(args: &[&str]) -> Result<Cfg, ConfigError> {
    let argv = std::iter::once("gw").chain(args.iter().copied());
    loader().try_load_from(argv).map(|l| l.config)
}

fn file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, text).expect("write the config file");
    let p = path.display().to_string();
    (dir, p)
}

#[test]
fn defaults_only() {
    let l = loader().try_load_from(["gw"]).expect("loads");
    assert_eq!(l.config, Cfg::default());
    assert_eq!(l.file, None);
    assert!(loader().undocumented().is_empty());
}

#[test]
fn file_only() {
    let (_d, path) = file(
        "threads = 3\nlogic = [\"127.0.0.1:7700\"]\nstore = \"disk\"\n\
         [heartbeat]\nwired_ms = 5000\nidle_timeout_ms = 900\n",
    );
    let l = loader()
        .try_load_from(["gw", "--config", &path])
        .expect("loads");
    let c = l.config;
    assert_eq!(c.threads, 3);
    assert_eq!(
        c.logic,
        ["127.0.0.1:7700".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(c.store, Store::Disk);
    assert_eq!(c.heartbeat.wired_ms, 5000);
    assert_eq!(c.heartbeat.idle_timeout_ms, Some(900));
    // What the file does not name keeps its default.
    assert_eq!(c.heartbeat.wifi_ms, 30_000);
    assert_eq!(c.heartbeat.shrink, 0.8);
    assert_eq!(c.listen, Cfg::default().listen);
    assert_eq!(l.file.as_deref(), Some(Path::new(&path)));
}

#[test]
fn flags_over_file() {
    let (_d, path) = file("threads = 3\nlogic = [\"127.0.0.1:1\"]\n[heartbeat]\nwired_ms = 5000\n");
    let c = load(&[
        "--config",
        &path,
        "--threads",
        "4",
        "--logic",
        "127.0.0.1:2,127.0.0.1:3",
        "--heartbeat-shrink",
        "0.5",
        "--secret-file",
        "/run/secret",
        "--store",
        "disk",
        "--nodelay",
        "false",
    ])
    .expect("loads");
    assert_eq!(c.threads, 4);
    let want: Vec<SocketAddr> = vec![
        "127.0.0.1:2".parse().expect("a"),
        "127.0.0.1:3".parse().expect("b"),
    ];
    assert_eq!(c.logic, want, "a list flag replaces the file's list");
    assert_eq!(c.heartbeat.wired_ms, 5000, "the file's value stays");
    assert_eq!(c.heartbeat.shrink, 0.5);
    assert_eq!(c.secret_file, Some(PathBuf::from("/run/secret")));
    assert_eq!(c.store, Store::Disk);
    assert!(!c.nodelay);
    // The last of a repeated flag wins; a repeated list flag appends.
    let c = load(&[
        "--threads",
        "1",
        "--threads",
        "2",
        "--logic",
        "127.0.0.1:5",
        "--logic",
        "127.0.0.1:6",
    ])
    .expect("loads");
    assert_eq!(c.threads, 2);
    assert_eq!(c.logic.len(), 2);
    // A bool flag alone means true; an empty list flag empties the list.
    let (_d, path) = file("nodelay = false\nlogic = [\"127.0.0.1:1\"]\n");
    let c = load(&["--config", &path, "--nodelay", "--logic", ""]).expect("loads");
    assert!(c.nodelay);
    assert!(c.logic.is_empty());
}

#[test]
fn shorthand_sets_each_field_and_a_specific_flag_wins() {
    let c = load(&["--heartbeat-ms", "1234"]).expect("loads");
    assert_eq!((c.heartbeat.wired_ms, c.heartbeat.wifi_ms), (1234, 1234));
    let c = load(&["--heartbeat-wired-ms", "7", "--heartbeat-ms", "1234"]).expect("loads");
    assert_eq!((c.heartbeat.wired_ms, c.heartbeat.wifi_ms), (7, 1234));
    let c = load(&["--adaptive-heartbeat", "false"]).expect("an alias");
    assert!(!c.heartbeat.adaptive);
    match load(&["--heartbeat-ms", "-5"]) {
        Err(ConfigError::Flag { flag, .. }) => assert_eq!(flag, "--heartbeat-ms"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_flag_value_names_the_flag() {
    for (args, flag) in [
        (&["--threads", "lots"][..], "--threads"),
        (&["--threads", "-1"], "--threads"),
        (&["--listen", "localhost"], "--listen"),
        (
            &["--heartbeat-wired-ms", "99999999999"],
            "--heartbeat-wired-ms",
        ),
        (&["--logic", "127.0.0.1:1,nonsense"], "--logic"),
    ] {
        match load(args) {
            Err(e @ ConfigError::Flag { .. }) => {
                let text = e.to_string();
                assert!(text.contains(flag), "{text}");
                assert!(text.contains(args[1]), "{text}");
                assert!(!text.contains('\n'), "one line: {text}");
            }
            other => panic!("{args:?}: {other:?}"),
        }
    }
    // An enum or bool outside its values is refused by clap, naming both.
    match load(&["--store", "tape"]) {
        Err(ConfigError::Cli(e)) => {
            let text = e.to_string();
            assert!(text.contains("tape") && text.contains("--store"), "{text}");
            assert!(text.contains("memory") && text.contains("disk"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        load(&["--nodelay", "yes"]),
        Err(ConfigError::Cli(_))
    ));
    assert!(matches!(
        load(&["--no-such-flag", "1"]),
        Err(ConfigError::Cli(_))
    ));
}

#[test]
fn a_bad_file_value_names_the_file_and_key() {
    let (_d, path) = file("threads = 2\n[heartbeat]\nwired_ms = \"fast\"\n");
    match load(&["--config", &path]) {
        Err(e @ ConfigError::File { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&path), "{text}");
            assert!(text.contains("line 3"), "{text}");
            assert!(text.contains("wired_ms"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    let (_d, path) = file("listen = [1, 2\n");
    assert!(matches!(
        load(&["--config", &path]),
        Err(ConfigError::File { .. })
    ));
    let missing = format!("{path}.missing");
    match load(&["--config", &missing]) {
        Err(e @ ConfigError::Read { .. }) => assert!(e.to_string().contains(&missing)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unknown_key_in_the_file_is_refused() {
    for text in [
        "thread = 3\n",
        "[heartbeat]\nwired = 1\n",
        "[heartbeats]\nwired_ms = 1\n",
    ] {
        let (_d, path) = file(text);
        match load(&["--config", &path]) {
            Err(e @ ConfigError::File { .. }) => {
                assert!(e.to_string().contains("unknown field"), "{e}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

/// The lines of `help` describing the option that starts with `flag`.
fn help_entry(help: &str, flag: &str) -> String {
    let mut lines = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(flag));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{flag} missing:\n{help}"));
    let starts_option = |l: &str| {
        let body = l.trim_start();
        body.starts_with('-') && l.len() - body.len() <= 6
    };
    let rest: Vec<&str> = lines.take_while(|l| !starts_option(l)).collect();
    format!("{first}\n{}", rest.join("\n"))
}

#[test]
fn help_lists_every_setting_with_its_default_and_doc() {
    let help = loader().long_help();
    // The shorthand is listed with the settings it sets.
    let table = help.find("[heartbeat]:").expect("a heading");
    assert!(help[table..].contains("--heartbeat-ms <INT>"), "{help}");
    for (flag, default) in [
        ("--listen <LISTEN>", Some("0.0.0.0:7000")),
        ("--threads <INT>", Some("0")),
        ("--secret-file <SECRET_FILE>", None),
        ("--logic <LOGIC,..>", Some("none")),
        ("--store <STORE>", Some("memory")),
        ("--nodelay [<BOOL>]", Some("true")),
        ("--heartbeat-wired-ms <INT>", Some("10000")),
        ("--heartbeat-wifi-ms <INT>", Some("30000")),
        ("--heartbeat-adaptive [<BOOL>]", Some("true")),
        ("--heartbeat-shrink <NUM>", Some("0.8")),
        ("--heartbeat-idle-timeout-ms <INT>", None),
    ] {
        let entry = help_entry(&help, flag);
        match default {
            Some(d) => assert!(entry.contains(&format!("[default: {d}]")), "{entry}"),
            None => assert!(!entry.contains("[default:"), "{entry}"),
        }
    }
    for doc in [
        "Every worker binds it.",
        "Starting interval for wired clients.",
        "On the local disk.",
        "[heartbeat]",
        "[default: 0.0.0.0:7000]",
        "[alias: --adaptive-heartbeat]",
        "(sets --heartbeat-wired-ms, --heartbeat-wifi-ms)",
        "--config <FILE>",
    ] {
        assert!(help.contains(doc), "{doc} missing:\n{help}");
    }
}

#[test]
fn the_subcommands_doc_comment_does_not_replace_the_about() {
    let help = loader()
        .with_command(|c| c.about("The gateway."))
        .try_dispatch_from::<Sub, _, _>(["gw", "--help"]);
    match help {
        Err(ConfigError::Cli(e)) => {
            let text = e.to_string();
            assert!(text.starts_with("The gateway."), "{text}");
            assert!(!text.contains("Subcommands of"), "{text}");
            assert!(text.contains("token"), "{text}");
            assert!(text.contains("`wired_ms` under `[heartbeat]`"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn subcommands_parse_with_their_own_flags() {
    match loader().try_dispatch_from::<Sub, _, _>(["gw", "token", "--uin", "5"]) {
        Ok(Invocation::Sub(Sub::Token { uin: 5 })) => {}
        other => panic!("{other:?}"),
    }
    match loader().try_dispatch_from::<Sub, _, _>(["gw", "--threads", "2"]) {
        Ok(Invocation::Run(l)) => assert_eq!(l.config.threads, 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        loader().try_dispatch_from::<Sub, _, _>(["gw", "--threads", "2", "token", "--uin", "5"]),
        Err(ConfigError::Cli(_))
    ));
}

#[test]
fn extra_arguments_come_back_in_the_matches() {
    let l = loader()
        .with_command(|c| {
            c.arg(
                Arg::new("dry-run")
                    .long("dry-run")
                    .action(ArgAction::SetTrue),
            )
        })
        .try_load_from(["gw", "--dry-run"])
        .expect("loads");
    assert!(l.matches.get_flag("dry-run"));
}

#[test]
fn a_misbuilt_command_line_is_an_internal_error() {
    let twice = loader().with_command(|c| c.arg(Arg::new("x").long("threads")));
    assert!(matches!(
        twice.try_load_from(["gw"]),
        Err(ConfigError::Schema(_))
    ));
    let unknown = Loader::<Cfg>::new("gw").alias("no.such", "x");
    assert!(matches!(
        unknown.try_load_from(["gw"]),
        Err(ConfigError::Schema(_))
    ));
    let mixed = Loader::<Cfg>::new("gw").shorthand("x", "x", &["threads", "store"]);
    assert!(matches!(
        mixed.try_load_from(["gw"]),
        Err(ConfigError::Schema(_))
    ));
}
