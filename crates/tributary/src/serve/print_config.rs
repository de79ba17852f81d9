//! `--print-config`: a service's settings in force, as a config file that
//! `--config` reads back: every flag's value (from the command line, the
//! environment, the config file or its default), then the sections of
//! settings without a flag (`[mqtt]`, `[query]`, `[commands]`).

use anyhow::Context;
use clap::ArgAction;

use crate::Command;

/// Flags whose values are secrets, or may hold some, and are not printed.
fn redacted(flag: &str, value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    flag.contains("secret")
        || (flag == "kafka-option"
            && (v.contains("password") || v.contains("secret") || v.contains("key=")))
}

/// A flag's value as TOML: booleans and numbers typed, lists as arrays.
fn value(arg: &clap::Arg, flag: &str, raw: Vec<String>) -> toml::Value {
    let typed = |v: &str| -> toml::Value {
        if redacted(flag, v) {
            return toml::Value::String("<redacted>".into());
        }
        if let Ok(i) = v.parse::<i64>() {
            toml::Value::Integer(i)
        } else if let Ok(f) = v
            .parse::<f64>()
            .map_err(|_| ())
            .and_then(|f| if f.is_finite() { Ok(f) } else { Err(()) })
        {
            toml::Value::Float(f)
        } else {
            toml::Value::String(v.to_owned())
        }
    };
    match arg.get_action() {
        ArgAction::SetTrue => toml::Value::Boolean(raw.first().is_some_and(|v| v == "true")),
        ArgAction::Append => toml::Value::Array(raw.iter().map(|v| typed(v)).collect()),
        _ => raw
            .first()
            .map_or(toml::Value::String(String::new()), |v| typed(v)),
    }
}

/// The `[mqtt]` settings without those a flag sets (printed as flags), so
/// that the output reads back as a config file.
fn unflagged(mqtt: tributary_ingest_mqtt::MqttConfig) -> anyhow::Result<toml::Value> {
    let mut t = toml::Table::try_from(mqtt)?;
    for (field, _) in super::args::MQTT_FLAGGED {
        t.remove(*field);
    }
    Ok(toml::Value::Table(t))
}

/// The settings of the service `service` would run with.
pub fn render(
    command: &clap::Command,
    matches: &clap::ArgMatches,
    service: &Command,
) -> anyhow::Result<String> {
    let (name, sub) = matches
        .subcommand()
        .context("--print-config goes with a service subcommand")?;
    let sub_command = command
        .find_subcommand(name)
        .context("unknown subcommand")?;
    let mut table = toml::Table::new();
    for arg in sub_command.get_arguments() {
        let Some(flag) = arg.get_long() else { continue };
        if arg.is_global_set() || matches!(flag, "help" | "version") {
            continue;
        }
        let Ok(Some(raw)) = sub.try_get_raw(arg.get_id().as_str()) else {
            continue;
        };
        let raw: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        table.insert(flag.to_owned(), value(arg, flag, raw));
    }
    let section = |t: &mut toml::Table, name: &str, v: toml::Value| {
        t.insert(name.to_owned(), v);
    };
    use super::config_file::section as apply;
    let query = || -> anyhow::Result<toml::Value> {
        Ok(toml::Value::try_from(apply(
            "query",
            tributary_query::QueryConfig::default(),
            &[],
        )?)?)
    };
    let commands = || -> anyhow::Result<toml::Value> {
        Ok(toml::Value::try_from(apply(
            "commands",
            tributary_commands::CommandConfig::default(),
            &[],
        )?)?)
    };
    let registry = || -> anyhow::Result<toml::Value> {
        Ok(toml::Value::try_from(apply(
            "registry",
            tributary_registry::RegistryConfig::default(),
            &[],
        )?)?)
    };
    // The HTTP API's settings without a flag of their own.
    let api = |args: &super::args::ApiArgs| -> anyhow::Result<toml::Value> {
        let mut v = toml::Value::try_from(args.config()?)?;
        if let Some(t) = v.as_table_mut() {
            t.remove("cors_origins");
        }
        Ok(v)
    };
    match service {
        Command::Standalone(a) => {
            let mqtt = a.mqtt.mqtt_settings("standalone".into())?;
            section(&mut table, "mqtt", unflagged(mqtt)?);
            section(&mut table, "api", api(&a.api)?);
            section(&mut table, "query", query()?);
            section(&mut table, "commands", commands()?);
            section(&mut table, "registry", registry()?);
        }
        Command::Ingest(a) => {
            let id = a.frontend_id.clone().unwrap_or_else(|| "ingest".into());
            let mqtt = a.mqtt.mqtt_settings(id)?;
            section(&mut table, "mqtt", unflagged(mqtt)?);
        }
        Command::Query(q) => {
            section(&mut table, "api", api(&q.api)?);
            section(&mut table, "query", query()?);
            section(&mut table, "commands", commands()?);
        }
        Command::Processor(_) => {
            section(&mut table, "query", query()?);
            section(&mut table, "commands", commands()?);
        }
        Command::Registry(_) => section(&mut table, "registry", registry()?),
        Command::Cli(_) => {}
    }
    // Flags first, sections after: TOML wants the tables last.
    let mut text = String::from("# tributary settings in force (--print-config)\n");
    let (flat, tables): (Vec<_>, Vec<_>) = table.into_iter().partition(|(_, v)| !v.is_table());
    let flat: toml::Table = flat.into_iter().collect();
    text.push_str(&toml::to_string(&flat)?);
    for (name, v) in tables {
        let mut one = toml::Table::new();
        one.insert(name, v);
        text.push('\n');
        text.push_str(&toml::to_string(&one)?);
    }
    Ok(text)
}
