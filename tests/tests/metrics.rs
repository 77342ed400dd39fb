//! `--metrics-bind`: Prometheus text that moves with real traffic and worker events.

use sockhost_tests::{
    children_of, connect, metric_value as value, metrics_addr, round_trip, scrape, wait_for_metric,
};

#[test]
fn process_mode_counters_move_with_traffic_and_a_worker_kill() {
    let server = sockhost_tests::serve(
        "echo",
        &[
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--metrics-bind",
            "127.0.0.1:0",
        ],
    );
    let m = metrics_addr(&server);
    let first = scrape(m);
    assert!(
        first.contains("sockhost_plugin_info{service=\"echo\",name=\"echo\",version=\"0.1.0\"} 1"),
        "{first}"
    );
    assert_eq!(value(&first, "sockhost_workers"), 2);
    assert_eq!(
        value(
            &first,
            "sockhost_connections_accepted_total{service=\"echo\"}"
        ),
        0
    );

    for i in 0..10 {
        let mut s = connect(server.addr());
        let data = vec![i as u8; 1000];
        assert_eq!(round_trip(&mut s, &data), data);
    }
    let after = wait_for_metric(
        m,
        "sockhost_connections_accepted_total{service=\"echo\"}",
        10,
    );
    wait_for_metric(m, "sockhost_received_bytes_total{service=\"echo\"}", 10_000);
    let after = if value(&after, "sockhost_sent_bytes_total{service=\"echo\"}") >= 10_000 {
        after
    } else {
        wait_for_metric(m, "sockhost_sent_bytes_total{service=\"echo\"}", 10_000)
    };
    assert!(
        value(
            &after,
            "sockhost_connections_closed_total{service=\"echo\",reason=\"closed\"}"
        ) <= 10
    );

    let victim = children_of(server.pid())[0];
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    let later = wait_for_metric(m, "sockhost_worker_exits_total{cause=\"crashed\"}", 1);
    assert!(value(&later, "sockhost_worker_starts_total") >= 2);
    wait_for_metric(m, "sockhost_worker_starts_total", 3);
    assert!(
        value(
            &later,
            "sockhost_connections_accepted_total{service=\"echo\"}"
        ) >= 10,
        "a dead worker's counts are kept"
    );

    server.signal("HUP");
    wait_for_metric(m, "sockhost_reloads_total{result=\"ok\"}", 1);
}

#[test]
fn thread_mode_serves_metrics_too() {
    let server = sockhost_tests::serve(
        "echo",
        &[
            "--bind",
            "127.0.0.1:0",
            "--concurrency",
            "thread",
            "--metrics-bind",
            "127.0.0.1:0",
        ],
    );
    let m = metrics_addr(&server);
    let mut s = connect(server.addr());
    assert_eq!(round_trip(&mut s, b"count me"), b"count me");
    let text = wait_for_metric(
        m,
        "sockhost_connections_accepted_total{service=\"echo\"}",
        1,
    );
    assert!(
        text.contains("# TYPE sockhost_connections_open gauge"),
        "{text}"
    );
    assert_eq!(
        value(&text, "sockhost_connections_open{service=\"echo\"}"),
        1
    );
}
