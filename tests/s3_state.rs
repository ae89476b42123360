//! The S3 building blocks (`kubeanon::state`) against moto's server's S3,
//! which implements conditional writes (`If-None-Match: *`, `If-Match`)
//! and conditional deletes.
//!
//! Races are made deterministic, never left to timing: the client under
//! test talks through the fault proxy (tests/support/proxy.rs), whose plan
//! runs when the client's write arrives and, before letting it go on, has
//! another writer change the object directly at moto. The write then
//! really reaches S3 with its condition and is refused there.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use kubeanon::deliver::s3::{Delivered, Deliveries, DeliveryName};
use kubeanon::output::{Format, Style};
use kubeanon::state::lease::holder_id;
use kubeanon::state::protocol::{Digest, Found, Pending, Target};
use kubeanon::state::{Acquire, Bucket, CasError, Leases, S3Url, States, WorkUnit};
use support::proxy::{Fault, Proxy};
use support::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn sdk_config(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await
}

/// A plain S3 client straight to moto: the other writer, and the test's
/// own eyes.
async fn raw() -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(&sdk_config(&moto().endpoint, REGION).await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Creates a bucket (in `region`) for one test.
async fn make_bucket(name: &str, region: &str) {
    let mut req = raw().await.create_bucket().bucket(name);
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(region.into())
                .build(),
        );
    }
    req.send().await.expect("create bucket");
}

/// kubeanon's handle on `s3://name/prefix/`, through `endpoint`.
async fn bucket_at(endpoint: &str, name: &str) -> Bucket {
    let url = S3Url::parse("--checkpoint", &format!("s3://{name}/kube/anon/")).unwrap();
    Bucket::with_config(
        &sdk_config(endpoint, REGION).await,
        Duration::from_secs(5),
        url,
    )
    .await
    .expect("bucket")
}

/// A fresh bucket and kubeanon's handle on it, straight to moto.
async fn fresh(name: &str) -> Bucket {
    make_bucket(name, REGION).await;
    bucket_at(&moto().endpoint, name).await
}

async fn get(bucket: &str, key: &str) -> Option<Vec<u8>> {
    match raw()
        .await
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(o) => Some(o.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
        Err(e) => panic!("get {key}: {e:?}"),
    }
}

async fn put_raw(bucket: &str, key: &str, body: &[u8]) {
    raw()
        .await
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .expect("raw put");
}

fn unit(log_group: &str) -> WorkUnit {
    WorkUnit::new("111122223333", REGION, log_group).unwrap()
}

/// Runs `f` on its own runtime in its own thread: the other writer, from
/// inside the proxy's plan.
fn meanwhile<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || rt().block_on(f)).join().unwrap()
}

/// The PUTs the proxy saw for keys containing `part`.
fn puts(proxy: &Proxy, part: &str) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("PUT ") && r.target.contains(part))
        .count()
}

#[test]
fn state_writes_are_compare_and_swap_and_never_overwrite() {
    rt().block_on(async {
        let states = States::new(fresh("kubeanon-cas").await);
        let u = unit("/aws/eks/prod/cluster");
        assert_eq!(
            states.key(&u),
            "kube/anon/state/111122223333/us-east-1/%2Faws%2Feks%2Fprod%2Fcluster.json"
        );
        assert!(states.read(&u).await.unwrap().is_none(), "no state yet");
        let e1 = states.create(&u, b"one").await.unwrap();
        // A second create loses, and says what is there.
        match states.create(&u, b"two").await {
            Err(CasError::LostRace(l)) => {
                assert_eq!(l.current.unwrap().body, b"one");
                assert!(
                    l.url.starts_with("s3://kubeanon-cas/kube/anon/state/"),
                    "{}",
                    l.url
                );
            }
            other => panic!("expected a lost race, got {other:?}"),
        }
        let read = states.read(&u).await.unwrap().unwrap();
        assert_eq!((read.body.as_slice(), &read.etag), (&b"one"[..], &e1));
        let e2 = states.replace(&u, b"two", &e1).await.unwrap();
        assert_ne!(e1, e2);
        // A replace with the ETag of a version that is gone loses.
        match states.replace(&u, b"three", &e1).await {
            Err(CasError::LostRace(l)) => assert_eq!(l.current.unwrap().body, b"two"),
            other => panic!("expected a lost race, got {other:?}"),
        }
        assert_eq!(get("kubeanon-cas", &states.key(&u)).await.unwrap(), b"two");
        // Deleted since it was read: lost too, and it says so.
        raw()
            .await
            .delete_object()
            .bucket("kubeanon-cas")
            .key(states.key(&u))
            .send()
            .await
            .unwrap();
        match states.replace(&u, b"four", &e2).await {
            Err(e @ CasError::LostRace(_)) => {
                assert!(e.to_string().contains("deleted by another writer"), "{e}");
            }
            other => panic!("expected a lost race, got {other:?}"),
        }
        assert!(get("kubeanon-cas", &states.key(&u)).await.is_none());
    });
}

#[test]
fn a_state_changed_between_read_and_write_is_never_overwritten() {
    rt().block_on(async {
        make_bucket("kubeanon-race", REGION).await;
        let proxy = Proxy::start(&moto().endpoint);
        let mine = States::new(bucket_at(&proxy.endpoint, "kubeanon-race").await);
        let other = States::new(bucket_at(&moto().endpoint, "kubeanon-race").await);
        let u = unit("/aws/eks/race/cluster");
        let e1 = mine.create(&u, b"v1").await.unwrap();
        let read = mine.read(&u).await.unwrap().unwrap();
        assert_eq!(read.etag, e1);
        // Our write is held at the proxy while the other writer replaces
        // the version we read; then ours goes on to S3.
        let (o, uu, done) = (other.clone(), u.clone(), Arc::new(Mutex::new(false)));
        let d = done.clone();
        proxy.clear();
        proxy.set_rest_plan(move |_, target| {
            if target.starts_with("PUT ") && !*d.lock().unwrap() {
                *d.lock().unwrap() = true;
                let (o, uu, e) = (o.clone(), uu.clone(), e1.clone());
                meanwhile(async move { o.replace(&uu, b"theirs", &e).await.unwrap() });
            }
            Fault::Forward
        });
        match mine.replace(&u, b"mine", &read.etag).await {
            Err(CasError::LostRace(l)) => assert_eq!(l.current.unwrap().body, b"theirs"),
            other => panic!("expected a lost race, got {other:?}"),
        }
        assert!(*done.lock().unwrap(), "the other writer ran");
        assert_eq!(
            puts(&proxy, "/state/"),
            1,
            "our write reached S3 and was refused there"
        );
        assert_eq!(
            get("kubeanon-race", &mine.key(&u)).await.unwrap(),
            b"theirs"
        );
    });
}

#[test]
fn a_write_whose_answer_was_lost_is_recognised_as_ours() {
    rt().block_on(async {
        make_bucket("kubeanon-lost-answer", REGION).await;
        let proxy = Proxy::start(&moto().endpoint);
        let states = States::new(bucket_at(&proxy.endpoint, "kubeanon-lost-answer").await);
        let u = unit("/aws/eks/a/cluster");
        // The first PUT reaches S3, its answer never comes back; the SDK
        // sends it again and S3 refuses it (If-None-Match): it was ours.
        let mut once = true;
        proxy.set_rest_plan(move |_, target| {
            if target.starts_with("PUT ") && std::mem::take(&mut once) {
                Fault::ForwardThenClose
            } else {
                Fault::Forward
            }
        });
        let e1 = states
            .create(&u, b"state-1")
            .await
            .expect("recognised as ours");
        assert_eq!(puts(&proxy, "/state/"), 2, "sent twice");
        let read = states.read(&u).await.unwrap().unwrap();
        assert_eq!((read.body.as_slice(), &read.etag), (&b"state-1"[..], &e1));
        // The same for a replace.
        let mut once = true;
        proxy.set_rest_plan(move |_, target| {
            if target.starts_with("PUT ") && std::mem::take(&mut once) {
                Fault::ForwardThenClose
            } else {
                Fault::Forward
            }
        });
        let e2 = states.replace(&u, b"state-2", &e1).await.expect("ours");
        assert_eq!(states.read(&u).await.unwrap().unwrap().etag, e2);
        assert_eq!(puts(&proxy, "/state/"), 4);
    });
}

#[test]
fn a_409_conflict_is_tried_again_while_the_object_still_matches() {
    rt().block_on(async {
        make_bucket("kubeanon-409", REGION).await;
        let proxy = Proxy::start(&moto().endpoint);
        let states = States::new(bucket_at(&proxy.endpoint, "kubeanon-409").await);
        let u = unit("/aws/eks/a/cluster");
        let mut first = true;
        proxy.set_rest_plan(move |_, target| {
            if target.starts_with("PUT ") && std::mem::take(&mut first) {
                Fault::S3Error(409, "ConditionalRequestConflict")
            } else {
                Fault::Forward
            }
        });
        states
            .create(&u, b"s")
            .await
            .expect("created on the second try");
        assert_eq!(puts(&proxy, "/state/"), 2);
        assert_eq!(get("kubeanon-409", &states.key(&u)).await.unwrap(), b"s");
    });
}

#[test]
fn json_state_round_trips_and_a_corrupt_one_is_refused_with_advice() {
    rt().block_on(async {
        let states = States::new(fresh("kubeanon-json").await);
        let u = unit("/aws/eks/j/cluster");
        let mut value = BTreeMap::from([("watermark_ms".to_string(), 5i64)]);
        let e1 = states.write_json(&u, &value, None).await.unwrap();
        value.insert("watermark_ms".into(), 9);
        let e2 = states.write_json(&u, &value, Some(&e1)).await.unwrap();
        let (back, etag): (BTreeMap<String, i64>, _) = states.read_json(&u).await.unwrap().unwrap();
        assert_eq!((back, etag), (value, e2));
        put_raw("kubeanon-json", &states.key(&u), b"\x00garbage").await;
        let err = format!(
            "{:#}",
            states
                .read_json::<BTreeMap<String, i64>>(&u)
                .await
                .unwrap_err()
        );
        for says in [
            "not kubeanon state",
            "s3://kubeanon-json/kube/anon/state/",
            "delete it",
        ] {
            assert!(err.contains(says), "{says:?} not in {err}");
        }
    });
}

#[test]
fn a_lease_is_exclusive_renewable_and_released_only_by_its_holder() {
    rt().block_on(async {
        let bucket = fresh("kubeanon-lease").await;
        let ttl = Duration::from_secs(60);
        let a = Leases::new(bucket.clone(), ttl, "run-a".into()).unwrap();
        let b = Leases::new(bucket.clone(), ttl, "run-b".into()).unwrap();
        let u = unit("/aws/eks/l/cluster");
        assert_eq!(
            a.key(&u),
            "kube/anon/lease/111122223333/us-east-1/%2Faws%2Feks%2Fl%2Fcluster.json"
        );
        let Acquire::Acquired(mut lease) = a.acquire(&u).await.unwrap() else {
            panic!("free unit not acquired");
        };
        // The expiry is on S3's clock: about now + ttl (moto runs here).
        let ahead = lease.expires_ms() - now_ms();
        assert!((57_000..=61_000).contains(&ahead), "expires in {ahead} ms");
        assert!(lease.remaining() > Duration::from_secs(55));
        match b.acquire(&u).await.unwrap() {
            Acquire::Held(info) => {
                assert_eq!(info.holder, "run-a");
                assert_eq!(info.expires_ms, lease.expires_ms());
                assert!(
                    info.to_string().starts_with("held by run-a until 20"),
                    "{info}"
                );
            }
            Acquire::Acquired(_) => panic!("two holders"),
        }
        // ensure() does nothing while more than half is left; renew() writes.
        let before = get("kubeanon-lease", &a.key(&u)).await.unwrap();
        a.ensure(&mut lease).await.unwrap();
        assert_eq!(get("kubeanon-lease", &a.key(&u)).await.unwrap(), before);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        a.renew(&mut lease).await.unwrap();
        let after = get("kubeanon-lease", &a.key(&u)).await.unwrap();
        assert_ne!(after, before, "renewed");
        assert!(matches!(b.acquire(&u).await.unwrap(), Acquire::Held(_)));
        // Released: gone, and free for the next run.
        assert!(a.release(lease).await.unwrap());
        assert!(get("kubeanon-lease", &a.key(&u)).await.is_none());
        let Acquire::Acquired(lb) = b.acquire(&u).await.unwrap() else {
            panic!("released unit not free");
        };
        assert!(b.release(lb).await.unwrap());
    });
}

#[test]
fn an_expired_lease_is_taken_over_by_exactly_one_run() {
    rt().block_on(async {
        make_bucket("kubeanon-takeover", REGION).await;
        let proxy = Proxy::start(&moto().endpoint);
        let ttl = Duration::from_secs(60);
        let via_proxy = bucket_at(&proxy.endpoint, "kubeanon-takeover").await;
        let direct = bucket_at(&moto().endpoint, "kubeanon-takeover").await;
        let crashed = Leases::new(direct.clone(), ttl, "crashed-run".into()).unwrap();
        let a = Leases::new(via_proxy, ttl, "run-a".into()).unwrap();
        let b = Leases::new(direct.clone(), ttl, "run-b".into()).unwrap();
        let u = unit("/aws/eks/t/cluster");
        let Acquire::Acquired(mut dead) = crashed.acquire(&u).await.unwrap() else {
            panic!("not acquired");
        };
        // The crashed run's lease, with its expiry moved into the past as
        // if its time had run out (the object as it would be then).
        let key = crashed.key(&u);
        let text = String::from_utf8(get("kubeanon-takeover", &key).await.unwrap()).unwrap();
        let past = now_ms() - 120_000;
        let expired = text.replace(&dead.expires_ms().to_string(), &past.to_string());
        assert_ne!(text, expired);
        put_raw("kubeanon-takeover", &key, expired.as_bytes()).await;
        // Run A reads the expired lease; as its takeover write arrives, run
        // B takes the lease over first. A's write (If-Match on the expired
        // lease) is refused by S3, and A is told B holds the unit.
        let (bb, uu) = (b.clone(), u.clone());
        let b_won = Arc::new(Mutex::new(None));
        let bw = b_won.clone();
        proxy.set_rest_plan(move |_, target| {
            if target.starts_with("PUT ") && bw.lock().unwrap().is_none() {
                let (bb, uu) = (bb.clone(), uu.clone());
                let got = meanwhile(async move { bb.acquire(&uu).await.unwrap() });
                *bw.lock().unwrap() = Some(matches!(got, Acquire::Acquired(_)));
            }
            Fault::Forward
        });
        match a.acquire(&u).await.unwrap() {
            Acquire::Held(info) => assert_eq!(info.holder, "run-b"),
            Acquire::Acquired(_) => panic!("two runs took one expired lease"),
        }
        assert_eq!(*b_won.lock().unwrap(), Some(true), "run B took it over");
        assert_eq!(puts(&proxy, "/lease/"), 1, "A's takeover reached S3");
        let now = String::from_utf8(get("kubeanon-takeover", &key).await.unwrap()).unwrap();
        assert!(now.contains("\"holder\":\"run-b\""), "{now}");
        // The crashed run, back: it cannot renew, and its release deletes
        // nothing.
        let err = crashed.renew(&mut dead).await.unwrap_err().to_string();
        assert!(
            err.contains("lost the lease") && err.contains("held by run-b"),
            "{err}"
        );
        assert!(!crashed.release(dead).await.unwrap());
        assert!(
            get("kubeanon-takeover", &key).await.is_some(),
            "B's lease stays"
        );
    });
}

#[test]
fn a_lease_that_expired_but_was_not_taken_is_renewed() {
    rt().block_on(async {
        make_bucket("kubeanon-late-renew", REGION).await;
        // Quick requests allow a short lease (a writer must have time left).
        let url = S3Url::parse("--checkpoint", "s3://kubeanon-late-renew/p/").unwrap();
        let bucket = Bucket::with_config(
            &sdk_config(&moto().endpoint, REGION).await,
            Duration::from_millis(250),
            url,
        )
        .await
        .unwrap();
        let shortest = kubeanon::state::lease::shortest(&bucket);
        assert_eq!(shortest, Duration::from_millis(7500));
        let err = Leases::new(
            bucket.clone(),
            shortest - Duration::from_millis(1),
            "x".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("too short") && err.contains("use at least 8s"),
            "{err}"
        );
        let a = Leases::new(bucket, shortest, "run-a".into()).unwrap();
        let u = unit("/aws/eks/r/cluster");
        let Acquire::Acquired(mut lease) = a.acquire(&u).await.unwrap() else {
            panic!("not acquired");
        };
        tokio::time::sleep(shortest + Duration::from_millis(100)).await;
        assert_eq!(lease.remaining(), Duration::ZERO);
        // Nobody took it: If-Match on our own ETag still holds.
        a.ensure(&mut lease).await.unwrap();
        assert!(lease.remaining() > Duration::from_secs(5));
    });
}

/// The child half of the clock test: run in a process whose clock
/// (`KUBEANON_TEST_NOW`) is a day ahead.
#[test]
fn a_clock_a_day_ahead_does_not_take_a_live_lease() {
    require_test_hooks();
    if let Ok(name) = std::env::var("KUBEANON_TEST_LEASE_BUCKET") {
        let endpoint = std::env::var("KUBEANON_TEST_MOTO").unwrap();
        rt().block_on(async {
            let bucket = bucket_at(&endpoint, &name).await;
            let leases =
                Leases::new(bucket.clone(), Duration::from_secs(60), "ahead".into()).unwrap();
            match leases.acquire(&unit("/aws/eks/c/cluster")).await.unwrap() {
                Acquire::Held(info) => assert_eq!(info.holder, "on-time"),
                Acquire::Acquired(_) => panic!("a clock a day ahead took a live lease"),
            }
            // Its estimate of S3's time is S3's, not its own.
            let off = (bucket.server_now_ms() - now_ms()).abs();
            assert!(off < 5_000, "S3's time estimated {off} ms off");
        });
        return;
    }
    let name = "kubeanon-clock";
    let holder = rt().block_on(async {
        let leases =
            Leases::new(fresh(name).await, Duration::from_secs(60), "on-time".into()).unwrap();
        match leases.acquire(&unit("/aws/eks/c/cluster")).await.unwrap() {
            Acquire::Acquired(l) => l,
            Acquire::Held(_) => panic!("not acquired"),
        }
    });
    let day_ahead = rfc(now_ms() + 86_400_000);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_clock_a_day_ahead_does_not_take_a_live_lease",
            "--test-threads=1",
        ])
        .env("KUBEANON_TEST_LEASE_BUCKET", name)
        .env("KUBEANON_TEST_MOTO", &moto().endpoint)
        .env("KUBEANON_TEST_NOW", &day_ahead)
        .env("KUBEANON_TEST_PYTHON", python())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    drop(holder);
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn a_delivery_is_written_once_and_a_repeat_finds_it() {
    rt().block_on(async {
        make_bucket("kubeanon-deliver", REGION).await;
        let proxy = Proxy::start(&moto().endpoint);
        let url = S3Url::parse("--deliver", "s3://kubeanon-deliver/findings").unwrap();
        let d = Deliveries::new(
            Bucket::with_config(&sdk_config(&proxy.endpoint, REGION).await, Duration::from_secs(5), url)
                .await
                .unwrap(),
            Style::plain(Format::Ndjson),
        );
        let u = unit("/aws/eks/prod/cluster");
        let name = DeliveryName {
            unit: &u,
            cluster: "prod",
            start_ms: 1_795_914_000_000,
            end_ms: 1_795_917_600_000,
            seq: 1,
        };
        let key = d.key(&name).unwrap();
        assert!(
            key.starts_with("findings/account=111122223333/region=us-east-1/cluster=prod/dt=2026-11-29/20261129T010000.000Z-20261129T020000.000Z-"),
            "{key}"
        );
        let rows = b"{\"verb\":\"get\",\"count\":2}\n{\"verb\":\"list\",\"count\":1}\n";
        assert!(get("kubeanon-deliver", &key).await.is_none());
        assert_eq!(d.put(&key, rows).await.unwrap(), Delivered::Written);
        let head = raw().await.head_object().bucket("kubeanon-deliver").key(&key).send().await.unwrap();
        assert_eq!(head.content_type(), Some("application/x-ndjson"));
        assert_eq!(head.content_encoding(), Some("gzip"));
        assert_eq!(gunzip(&get("kubeanon-deliver", &key).await.unwrap()), rows);
        // Delivered again (a retry, or a step repeated after a crash before
        // its commit): found, same rows, nothing written.
        assert_eq!(d.put(&key, rows).await.unwrap(), Delivered::AlreadyThere);
        // Its answer lost on the way back: sent again, found, fine.
        let other = DeliveryName { seq: 2, ..name };
        let key2 = d.key(&other).unwrap();
        let mut once = true;
        proxy.set_rest_plan(move |_, target| {
            if target.starts_with("PUT ") && std::mem::take(&mut once) {
                Fault::ForwardThenClose
            } else {
                Fault::Forward
            }
        });
        assert_eq!(d.put(&key2, rows).await.unwrap(), Delivered::AlreadyThere);
        assert_eq!(gunzip(&get("kubeanon-deliver", &key2).await.unwrap()), rows);
        // Other rows under a delivered key: an error, and the object stays.
        let err = format!("{:#}", d.put(&key, b"{\"verb\":\"watch\"}\n").await.unwrap_err());
        for says in ["already exists with other rows", "never overwrites", "s3://kubeanon-deliver/findings/account="] {
            assert!(err.contains(says), "{says:?} not in {err}");
        }
        assert_eq!(gunzip(&get("kubeanon-deliver", &key).await.unwrap()), rows);
        // An object someone else put there is not taken for ours either.
        let key3 = d.key(&DeliveryName { seq: 3, ..name }).unwrap();
        put_raw("kubeanon-deliver", &key3, b"not ours").await;
        let err = format!("{:#}", d.put(&key3, rows).await.unwrap_err());
        assert!(err.contains("not written by kubeanon"), "{err}");
    });
}

/// A pending delivery of `rows` at `key`, as a run records it before
/// writing (the commit does not matter to the target).
fn pending(key: &str, rows: &[u8]) -> Pending {
    serde_json::from_value(serde_json::json!({
        "key": key,
        "rows": Digest::of(rows),
        "commit": {
            "account": "111122223333", "region": REGION, "log_group": "/aws/eks/prod/cluster",
            "read": {"stream_prefix": "kube-apiserver-audit-", "server_filter": true},
            "watermark_ms": 1, "horizon_ms": 0, "new_seen": []
        }
    }))
    .unwrap()
}

#[test]
fn recovery_claims_an_absent_key_so_a_late_write_of_it_lands_nowhere() {
    rt().block_on(async {
        let bucket = fresh("kubeanon-claim").await;
        let d = Deliveries::new(bucket, Style::plain(Format::Ndjson));
        let u = unit("/aws/eks/prod/cluster");
        let name = DeliveryName {
            unit: &u,
            cluster: "prod",
            start_ms: 1_795_914_000_000,
            end_ms: 1_795_917_600_000,
            seq: 4,
        };
        let key = d.key(&name).unwrap();
        let rows = b"{\"verb\":\"get\",\"count\":2}\n";
        // Run A recorded the delivery; its PUT is still on its way when B
        // settles the unit: B finds nothing, and claims the key.
        assert_eq!(
            d.claim_or_find(&pending(&key, rows)).await.unwrap(),
            Found::Absent
        );
        let claim = get("kubeanon-claim", &key)
            .await
            .expect("the claim is an object");
        assert!(gunzip(&claim).is_empty(), "a claim holds no rows");
        // A's PUT lands late: refused, and the key still holds no rows, so
        // the step B reads again (into its next sequence number) is the
        // only copy of those rows.
        let err = format!("{:#}", d.put(&key, rows).await.unwrap_err());
        assert!(
            err.contains("was claimed by another run's recovery"),
            "{err}"
        );
        assert!(gunzip(&get("kubeanon-claim", &key).await.unwrap()).is_empty());
        // Settled again (B crashed after claiming): still absent.
        assert_eq!(
            d.claim_or_find(&pending(&key, rows)).await.unwrap(),
            Found::Absent
        );
        // A write that did land before recovery is found as delivered, by
        // its digest; other rows at the key are refused, never taken.
        let key5 = d.key(&DeliveryName { seq: 5, ..name }).unwrap();
        assert_eq!(d.put(&key5, rows).await.unwrap(), Delivered::Written);
        assert_eq!(
            d.claim_or_find(&pending(&key5, rows)).await.unwrap(),
            Found::Delivered
        );
        let err = format!(
            "{:#}",
            d.claim_or_find(&pending(&key5, b"other\n"))
                .await
                .unwrap_err()
        );
        assert!(err.contains("holds other rows"), "{err}");
    });
}

#[test]
fn a_parquet_claim_is_an_empty_parquet_file_and_a_late_write_lands_nowhere() {
    rt().block_on(async {
        let bucket = fresh("kubeanon-claim-parquet").await;
        let d = Deliveries::new(bucket, Style::plain(Format::Parquet));
        let u = unit("/aws/eks/prod/cluster");
        let name = DeliveryName {
            unit: &u,
            cluster: "prod",
            start_ms: 1_795_914_000_000, // 2026-11-29T01:00:00Z
            end_ms: 1_795_917_600_000,
            seq: 4,
        };
        let key = d.key(&name).unwrap();
        assert!(
            key.starts_with("kube/anon/region=us-east-1/accountId=111122223333/eventDay=20261129/")
                && key.ends_with("-4.parquet"),
            "{key}"
        );
        let late = b"PAR1 the rows of run A PAR1";
        assert_eq!(
            d.claim_or_find(&pending(&key, late)).await.unwrap(),
            Found::Absent
        );
        let head = raw()
            .await
            .head_object()
            .bucket("kubeanon-claim-parquet")
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_type(), Some("application/vnd.apache.parquet"));
        assert!(head.metadata().unwrap().contains_key("kubeanon-claim"));
        // Any reader of the prefix reads the claim as a file of no rows.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("claim.parquet");
        std::fs::write(&file, get("kubeanon-claim-parquet", &key).await.unwrap()).unwrap();
        let read = read_parquet(&[file]);
        assert_eq!(read[0]["rows"], 0, "{read:?}");
        assert!(
            read[0]["columns"]
                .as_array()
                .unwrap()
                .contains(&"unmapped".into())
        );
        // Run A's write lands late: refused.
        let err = format!("{:#}", d.put(&key, late).await.unwrap_err());
        assert!(
            err.contains("was claimed by another run's recovery"),
            "{err}"
        );
    });
}

#[test]
fn a_bucket_in_another_region_is_found_and_used() {
    rt().block_on(async {
        make_bucket("kubeanon-eu", "eu-west-1").await;
        // The run's region is us-east-1; the bucket says where it is.
        let bucket = bucket_at(&moto().endpoint, "kubeanon-eu").await;
        assert_eq!(bucket.region(), "eu-west-1");
        let states = States::new(bucket);
        let u = unit("/aws/eks/eu/cluster");
        states.create(&u, b"x").await.unwrap();
        assert_eq!(states.read(&u).await.unwrap().unwrap().body, b"x");
    });
}

#[test]
fn a_missing_bucket_and_an_unreachable_endpoint_fail_clearly() {
    rt().block_on(async {
        let url = S3Url::parse("--checkpoint", "s3://kubeanon-no-such-bucket/p/").unwrap();
        let err = Bucket::with_config(
            &sdk_config(&moto().endpoint, REGION).await,
            Duration::from_secs(5),
            url,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("S3 bucket kubeanon-no-such-bucket does not exist"),
            "{err}"
        );
        let closed = closed_endpoint();
        let url = S3Url::parse("--checkpoint", "s3://kubeanon-any/p/").unwrap();
        let started = std::time::Instant::now();
        let err = Bucket::with_config(
            &sdk_config(&closed, REGION).await,
            Duration::from_secs(5),
            url,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!("cannot connect to S3 at {closed}")),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    });
}

#[test]
fn a_403_for_a_missing_object_is_told_from_access_denied() {
    rt().block_on(async {
        make_bucket("kubeanon-403", REGION).await;
        let proxy = Proxy::start(&moto().endpoint);
        let states = States::new(bucket_at(&proxy.endpoint, "kubeanon-403").await);
        let (here, missing) = (
            unit("/aws/eks/here/cluster"),
            unit("/aws/eks/missing/cluster"),
        );
        states.create(&here, b"s").await.unwrap();
        // S3 answers 403 to a GET when the role may not list the key,
        // whether or not the object exists; the listing tells.
        proxy.set_rest_plan(|_, target| {
            if target.starts_with("GET ") && target.contains("/state/") {
                Fault::S3Error(403, "AccessDenied")
            } else {
                Fault::Forward
            }
        });
        assert!(states.read(&missing).await.unwrap().is_none());
        let err = format!("{:#}", states.read(&here).await.unwrap_err());
        for says in [
            "access denied",
            "s3:GetObject",
            "s3://kubeanon-403/kube/anon/state/",
            "iam-policy-s3.json",
        ] {
            assert!(err.contains(says), "{says:?} not in {err}");
        }
    });
}

#[test]
fn holder_ids_name_the_host_and_differ_per_run() {
    let (a, b) = (holder_id(), holder_id());
    assert_ne!(a, b);
    assert!(a.contains(&format!("/{}/", std::process::id())), "{a}");
}
