//! The command line's unit tests.

use std::time::Duration;

use super::*;
use clap::CommandFactory;

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn plugin_is_required_unless_inspecting_or_configured() {
    assert!(Cli::try_parse_from(["sockhost"]).is_err());
    assert!(Cli::try_parse_from(["sockhost", "--config", "x.toml"]).is_ok());
    assert!(Cli::try_parse_from(["sockhost", "check", "--config", "x.toml"]).is_ok());
    let cli = Cli::try_parse_from(["sockhost", "inspect", "x.so"]).unwrap();
    assert!(matches!(cli.command, Some(Command::Inspect { .. })));
}

#[test]
fn defaults_follow_the_spec() {
    let cli = Cli::try_parse_from(["sockhost", "--plugin", "x.so"]).unwrap();
    let c = cli.serve.into_config().unwrap();
    let s = &c.services[0];
    assert_eq!(s.binds[0].to_string(), "tcp://127.0.0.1:8060");
    assert_eq!(s.name, "x");
    assert_eq!(c.backlog, 2048);
    assert_eq!(s.keep_alive, Some(Duration::from_secs(15)));
    assert_eq!(c.concurrency, Concurrency::Process);
    assert_eq!(s.max_connections, 10000);
}

#[test]
fn plugin_opts_need_an_equals_sign() {
    assert!(Cli::try_parse_from(["sockhost", "--plugin", "x", "--plugin-opt", "novalue"]).is_err());
    let cli = Cli::try_parse_from(["sockhost", "--plugin", "x", "--plugin-opt", "a=b=c"]).unwrap();
    assert_eq!(
        cli.serve.plugin_opts,
        vec![("a".to_string(), "b=c".to_string())]
    );
}

#[test]
fn access_log_format_follows_log_format_unless_given() {
    let parse = |args: &[&str]| {
        let mut all = vec!["sockhost", "--plugin", "x"];
        all.extend(args);
        Cli::try_parse_from(all)
            .unwrap()
            .serve
            .into_config()
            .unwrap()
    };
    assert!(parse(&[]).access_log.is_none());
    let json = parse(&["--log-format", "json", "--access-log", "-"]);
    assert_eq!(json.access_log.unwrap().format, LogFormat::Json);
    let text = parse(&[
        "--log-format",
        "json",
        "--access-log",
        "a.log",
        "--access-log-format",
        "text",
    ]);
    assert_eq!(text.access_log.unwrap().format, LogFormat::Text);
    assert!(
        Cli::try_parse_from(["sockhost", "--plugin", "x", "--access-log-format", "json"]).is_err()
    );
}

#[test]
fn a_bad_log_filter_is_a_usage_error() {
    let err = Cli::try_parse_from(["sockhost", "--plugin", "x", "--log-filter", "sockhost=loud"])
        .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
}

#[test]
fn keep_alive_zero_means_never() {
    let cli = Cli::try_parse_from(["sockhost", "--plugin", "x", "--keep-alive", "0"]).unwrap();
    assert_eq!(
        cli.serve.into_config().unwrap().services[0].keep_alive,
        None
    );
}
