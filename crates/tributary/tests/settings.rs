//! Settings as an operator sets them: `--print-config` shows what is in
//! force, reads back as a `--config` file, and takes every setting from a
//! flag, the environment or a file section; unknown settings are errors.

use std::process::Command;

fn tributary(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run tributary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn print_config_reads_back_and_sections_set_what_flags_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        "mqtt-max-topic-levels = 12\n[mqtt]\nmax_queued_messages = 5000\n[query]\nmax_devices = 500\n\
         [registry]\nmax_tokens_per_device = 5\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (ok, printed, err) = tributary(
        &["standalone", "--config", file, "--print-config"],
        &[("TRIBUTARY_COMMANDS__MAX_PENDING", "42")],
    );
    assert!(ok, "{err}");
    for line in [
        "mqtt-max-topic-levels = 12",
        "max_queued_messages = 5000",
        "max_devices = 500",
        "max_pending = 42",
        "max_tokens_per_device = 5",
        "http-header-timeout-secs = 10",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line:?} in\n{printed}");
    }
    // What it printed is a config file that gives the same settings.
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let (ok, reprinted, err) = tributary(
        &[
            "standalone",
            "--config",
            again.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(reprinted, printed);
}

#[test]
fn unknown_or_misplaced_settings_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |text: &str| {
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_owned()
    };
    for (text, says) in [
        ("no-such-flag = 1\n", "unknown setting"),
        ("[mqtt]\nnope = 1\n", "unknown field `nope`"),
        ("[mqtt]\nmax_topic_levels = 5\n", "--mqtt-max-topic-levels"),
        ("[mqtt]\nmax_topic_levels_typo = 5\n", "unknown field"),
        ("[mqtt]\nreceive_maximum = 0\n", "receive_maximum"),
    ] {
        let (ok, _, err) = tributary(
            &["standalone", "--config", &write(text), "--print-config"],
            &[],
        );
        assert!(!ok, "{text:?} was accepted");
        assert!(err.contains(says), "{text:?}: {err}");
    }
    let (ok, _, err) = tributary(
        &["standalone", "--print-config"],
        &[("TRIBUTARY_MQTT__MAX_QUEUED_MESSAGES", "lots")],
    );
    assert!(!ok && err.contains("max_queued_messages"), "{err}");
}
