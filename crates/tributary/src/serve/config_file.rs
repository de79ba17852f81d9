//! `--config FILE`: service settings from a TOML file.
//!
//! Keys are the long flag names (`http-addr = "0.0.0.0:8080"`,
//! `kafka-option = ["a=b", "c=d"]`; `_` and `-` are the same). Precedence,
//! highest first: a flag on the command line, its environment variable, the
//! file, the default. The file is applied by appending `--key=value` for
//! every key that neither the command line nor the environment sets, so
//! clap validates file values exactly like flags, and an unknown key is the
//! same error as an unknown flag.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};

/// Largest config file read, in bytes.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The process arguments with the config file's settings appended, when
/// `--config` (or `TRIBUTARY_CONFIG`) names one.
pub fn expand_args(args: Vec<OsString>, command: &clap::Command) -> anyhow::Result<Vec<OsString>> {
    let Some(path) = config_path(&args) else {
        return Ok(args);
    };
    let text = read_limited(Path::new(&path))
        .with_context(|| format!("reading --config {}", path.to_string_lossy()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("parsing --config {}", path.to_string_lossy()))?;
    // The subcommand whose flags the file may set.
    let sub = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find_map(|a| command.find_subcommand(a));
    let Some(sub) = sub else {
        bail!(
            "--config is only meaningful with a service subcommand (standalone, registry, ingest, processor, query)"
        );
    };
    let mut out = args.clone();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let Some(arg) = sub
            .get_arguments()
            .chain(command.get_arguments())
            .find(|a| a.get_long() == Some(flag.as_str()))
        else {
            bail!(
                "--config {}: unknown setting {key:?} (keys are the long flag names of `tributary {} --help`)",
                path.to_string_lossy(),
                sub.get_name()
            );
        };
        if on_command_line(&args, &flag) {
            continue;
        }
        if arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        for v in values(&key, value)? {
            match v {
                Setting::Flag(true) => out.push(format!("--{flag}").into()),
                Setting::Flag(false) => {}
                Setting::Value(v) => out.push(format!("--{flag}={v}").into()),
            }
        }
    }
    Ok(out)
}

enum Setting {
    Flag(bool),
    Value(String),
}

fn values(key: &str, value: toml::Value) -> anyhow::Result<Vec<Setting>> {
    Ok(match value {
        toml::Value::String(s) => vec![Setting::Value(s)],
        toml::Value::Integer(i) => vec![Setting::Value(i.to_string())],
        toml::Value::Float(f) => vec![Setting::Value(f.to_string())],
        toml::Value::Boolean(b) => vec![Setting::Flag(b)],
        toml::Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    toml::Value::Array(_) | toml::Value::Table(_) => {
                        bail!("config key {key:?}: nested lists and tables are not settings")
                    }
                    other => out.extend(values(key, other)?),
                }
            }
            out
        }
        toml::Value::Datetime(d) => vec![Setting::Value(d.to_string())],
        toml::Value::Table(_) => {
            bail!("config key {key:?}: tables are not settings; use flat keys")
        }
    })
}

fn on_command_line(args: &[OsString], flag: &str) -> bool {
    let long = format!("--{flag}");
    let with_value = format!("--{flag}=");
    args.iter()
        .filter_map(|a| a.to_str())
        .any(|a| a == long || a.starts_with(&with_value))
}

fn config_path(args: &[OsString]) -> Option<OsString> {
    let mut iter = args.iter().skip(1);
    while let Some(a) = iter.next() {
        if a == "--config" {
            return iter.next().cloned();
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(v.into());
        }
    }
    std::env::var_os("TRIBUTARY_CONFIG")
}

fn read_limited(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        bail!("larger than {MAX_CONFIG_BYTES} bytes");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn expand(file: &str, argv: &[&str]) -> anyhow::Result<Vec<String>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.toml");
        std::fs::write(&path, file)?;
        let mut args: Vec<OsString> = argv.iter().map(OsString::from).collect();
        args.push("--config".into());
        args.push(path.clone().into());
        let out = expand_args(args, &crate::Args::command())?;
        Ok(out
            .into_iter()
            .skip(argv.len() + 2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn file_settings_become_flags_unless_given_on_the_command_line() {
        let added = expand(
            "http_addr = \"127.0.0.1:1\"\nkafka-option = [\"a=b\", \"c=d\"]\nkafka-partitions = 3\n",
            &["tributary", "ingest", "--kafka-partitions", "7"],
        )
        .unwrap();
        assert_eq!(
            added,
            [
                "--http-addr=127.0.0.1:1",
                "--kafka-option=a=b",
                "--kafka-option=c=d"
            ]
        );
    }

    #[test]
    fn unknown_keys_and_tables_are_errors() {
        let e = expand("no-such-flag = 1\n", &["tributary", "ingest"]).unwrap_err();
        assert!(format!("{e:#}").contains("unknown setting"), "{e:#}");
        let e = expand("[kafka]\nx = 1\n", &["tributary", "ingest"]).unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown setting") || format!("{e:#}").contains("tables"),
            "{e:#}"
        );
    }
}
