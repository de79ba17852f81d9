//! `--config FILE`: service settings from a TOML file.
//!
//! Keys are the long flag names (`http-addr = "0.0.0.0:8080"`,
//! `kafka-option = ["a=b", "c=d"]`; `_` and `-` are the same). Precedence,
//! highest first: a flag on the command line, its environment variable, the
//! file, the default. The file is applied by appending `--key=value` for
//! every key that neither the command line nor the environment sets, so
//! clap validates file values exactly like flags, and an unknown key is the
//! same error as an unknown flag.
//!
//! Settings without a flag of their own live in sections named after the
//! library that reads them: `[mqtt]` ([`tributary_ingest_mqtt::MqttConfig`]),
//! `[query]` (`QueryConfig`), `[commands]` (`CommandConfig`), `[registry]`
//! (`RegistryConfig`, with `[registry.limits]`), keyed by field
//! name (`[mqtt]\nmax_queued_messages = 5000`). The same settings come from
//! the environment as `TRIBUTARY_<SECTION>__<FIELD>` (e.g.
//! `TRIBUTARY_MQTT__MAX_QUEUED_MESSAGES=5000`), which wins over the file. An
//! unknown field is an error, and so is a field that has a flag (set the
//! flag). `tributary <service> --print-config` prints what is in force.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};

/// Largest config file read, in bytes.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The sections a config file may have, for settings without a flag.
pub const SECTIONS: &[&str] = &["mqtt", "coap", "query", "commands", "registry", "api"];

/// The sections of the config file, once read.
static FILE_SECTIONS: std::sync::OnceLock<toml::Table> = std::sync::OnceLock::new();

/// `base` with the settings of section `name` applied: the config file's,
/// then `TRIBUTARY_<NAME>__<FIELD>` variables. `flagged` lists the fields
/// that have a flag (`(field, flag)`): setting them here is an error that
/// names the flag. Unknown fields are errors (the types deny them).
pub fn section<T>(name: &str, base: T, flagged: &[(&str, &str)]) -> anyhow::Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut overrides = toml::Table::new();
    if let Some(toml::Value::Table(t)) = FILE_SECTIONS.get().and_then(|s| s.get(name)) {
        overrides.extend(t.clone());
    }
    let prefix = format!("TRIBUTARY_{}__", name.to_ascii_uppercase());
    for (key, value) in std::env::vars() {
        if let Some(field) = key.strip_prefix(&prefix) {
            // A TOML value when it parses as one (numbers, booleans), else text.
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            overrides.insert(field.to_ascii_lowercase(), parsed);
        }
    }
    if overrides.is_empty() {
        return Ok(base);
    }
    let mut merged = toml::Table::try_from(&base).context("encoding the defaults")?;
    for (field, value) in overrides {
        if let Some((_, flag)) = flagged.iter().find(|(f, _)| *f == field) {
            bail!(
                "[{name}] {field}: this setting has a flag; set --{flag} (or `{flag} = …` at the top of the config file)"
            );
        }
        merged.insert(field, value);
    }
    T::deserialize(merged).map_err(|e| anyhow::anyhow!("[{name}] settings: {e}"))
}

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
    let mut sections = toml::Table::new();
    for (key, value) in table {
        if SECTIONS.contains(&key.as_str()) {
            if !value.is_table() {
                bail!("--config: {key:?} is a section: write it as [{key}]");
            }
            sections.insert(key, value);
            continue;
        }
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
    let _ = FILE_SECTIONS.set(sections);
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
            bail!(
                "config key {key:?}: tables are not settings; use flat keys, or one of the sections {SECTIONS:?}"
            )
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
