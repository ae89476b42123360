//! Using kubeanon as a library: feed audit events from anywhere to the
//! detection core and print the findings.
//!
//! Run: `cargo run --example library`

use kubeanon::detect::{COLUMNS, Detector, Exclusion, Origin};

fn main() {
    let events = [
        // An anonymous probe: reported.
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","requestURI":"/version","verb":"get","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"sourceIPs":["198.51.100.7"],"userAgent":"zgrab/0.x","responseStatus":{"code":403},"requestReceivedTimestamp":"2026-11-29T01:02:03.000004Z"}"#,
        // A kubelet health check, also anonymous: silenced by the exclusion.
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","requestURI":"/livez","verb":"get","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"sourceIPs":["10.0.1.15"],"userAgent":"kube-probe/1.30","responseStatus":{"code":200},"requestReceivedTimestamp":"2026-11-29T01:02:04.000004Z"}"#,
        // An authenticated request: not reported.
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","requestURI":"/api/v1/pods","verb":"list","user":{"username":"kubernetes-admin","groups":["system:masters","system:authenticated"]},"sourceIPs":["10.0.0.5"]}"#,
    ];
    let exclusions = vec![Exclusion::parse("userAgent=kube-probe/*").expect("valid exclusion")];
    let mut detector = Detector::new(exclusions);
    for event in events {
        detector.feed(event.as_bytes(), Origin::default());
    }
    let (aggregate, stats) = detector.finish();
    println!(
        "{} events, {} matched, {} rows excluded",
        stats.events, stats.matched, stats.excluded
    );
    for finding in &aggregate.into_findings() {
        for (name, value) in COLUMNS.iter().zip(finding.cols()) {
            println!("{name:>26}: {value}");
        }
        println!("{:>26}: {}", "count", finding.count);
        // The triage: how bad it is, and the binding that let it in.
        println!("{:>26}: {}", "severity", finding.severity);
        println!("{:>26}: {}", "decision", finding.triage.decision);
        println!("{:>26}: {}", "binding", finding.triage.binding);
    }
}
