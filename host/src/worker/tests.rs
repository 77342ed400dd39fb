//! The worker on its own, with no services: the order of its events over a [`Link`], and
//! how a supervisor's error ends it.

use super::*;

fn settings() -> Settings {
    Settings {
        graceful_timeout: Duration::from_secs(5),
        max_requests: 0,
        max_requests_jitter: 0,
        access_log: None,
    }
}

#[test]
fn a_stop_sent_on_the_link_stops_the_worker_and_its_events_come_in_order_then_end() {
    let mut seen = Vec::new();
    let record = &mut seen;
    Worker::new(Vec::new(), settings())
        .run(|mut link| async move {
            while let Some(event) = link.events.recv().await {
                if let WorkerEvent::Serving = event {
                    let stop = Stop::Graceful(StopReason::HandedOver);
                    link.stop.send(stop).expect("the worker listens");
                }
                record.push(event);
            }
            Ok(())
        })
        .expect("the worker stops cleanly");
    let order: Vec<String> = seen
        .iter()
        .filter(|e| !matches!(e, WorkerEvent::Heartbeat(_)))
        .map(|e| format!("{e:?}"))
        .collect();
    assert_eq!(
        order,
        ["Serving", "Stopping(Graceful(HandedOver))", "Draining"],
        "events: {seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(WorkerEvent::Heartbeat(c)) if c.is_empty()),
        "a last heartbeat once stopped: {seen:?}"
    );
}

#[test]
fn an_error_from_the_supervisor_ends_the_worker_with_that_error() {
    let ran = Worker::new(Vec::new(), settings()).run(|mut link| async move {
        link.events.recv().await;
        Err(HostError::io("announcing", std::io::Error::other("failed")))
    });
    assert!(
        matches!(&ran, Err(HostError::Io { what, .. }) if what == "announcing"),
        "{ran:?}"
    );
}
