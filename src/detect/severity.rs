//! Triage: how much a row matters, and the binding that let it in.
//!
//! ESCU gives every match the same risk; the API server says more. Its
//! audit events carry the authorizer's decision and reason
//! (`authorization.k8s.io/decision`, `authorization.k8s.io/reason`), and
//! RBAC's reason names the binding that allowed the request. The policy
//! here reads those and the row's own columns; it is the README's
//! "Severity" section, branch for branch.

use std::fmt;
use std::str::FromStr;

/// How much a row matters. The numbers are OCSF's `severity_id`, so
/// severities compare as OCSF's do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Refused, or an outcome not recorded on this row.
    Informational = 1,
    /// Allowed, on an endpoint every cluster grants to anyone.
    Low = 2,
    /// Never given by the policy; a level for `--min-severity` and OCSF.
    Medium = 3,
    /// Allowed, anything else.
    High = 4,
    /// Allowed: secrets, exec/attach/port-forward, token requests, RBAC
    /// objects, or any write.
    Critical = 5,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Informational,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// OCSF's `severity_id`.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The severity with this OCSF `severity_id`.
    pub fn from_id(id: u8) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The column's value and the flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// OCSF's caption of the `severity_id`.
    pub fn caption(self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Severity, String> {
        Severity::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s))
            .or_else(|| {
                s.eq_ignore_ascii_case("info")
                    .then_some(Severity::Informational)
            })
            .ok_or_else(|| {
                format!("'{s}' is not a severity: informational, low, medium, high or critical")
            })
    }
}

/// What the policy reads of one request: values as a row shows them
/// (`"0"` where absent).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub code: &'a str,
    pub stage: &'a str,
    /// `authorization.k8s.io/decision`.
    pub decision: &'a str,
    pub verb: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub uri: &'a str,
}

/// The non-resource paths every cluster grants to `system:unauthenticated`
/// (ClusterRoles `system:public-info-viewer` and
/// `system:service-account-issuer-discovery`), compared whole, without
/// the query string. A subpath (`/healthz/etcd`, `/livez/ping`) is granted
/// by no default role: allowed, it means someone granted more.
const PUBLIC_INFO: [&str; 7] = [
    "/version",
    "/version/",
    "/healthz",
    "/livez",
    "/readyz",
    "/.well-known/openid-configuration",
    "/openid/v1/jwks",
];

/// Verbs that change something: the API's own for resources, and the HTTP
/// methods a non-resource request is logged with.
const WRITES: [&str; 7] = [
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "post",
    "put",
];

/// Objects that grant or are credentials.
const RBAC: [&str; 4] = [
    "roles",
    "rolebindings",
    "clusterroles",
    "clusterrolebindings",
];

/// The policy:
/// - informational: answered 401 or 403 (refused by authentication,
///   authorization or admission, whatever the decision said), or the
///   decision is `forbid`, or a `RequestReceived` row (no outcome yet;
///   the later stage's row carries it);
/// - otherwise the request got past authorization, and then: critical on
///   secrets, `pods/exec|attach|portforward`, `serviceaccounts/token`,
///   RBAC objects, or any write verb; low on the public-info endpoints;
///   high on anything else.
pub fn severity(r: &Request<'_>) -> Severity {
    if matches!(r.code, "401" | "403") || r.decision == "forbid" || r.stage == "RequestReceived" {
        Severity::Informational
    } else if critical(r) {
        Severity::Critical
    } else if public_info(r.uri) {
        Severity::Low
    } else {
        Severity::High
    }
}

fn critical(r: &Request<'_>) -> bool {
    WRITES.contains(&r.verb)
        || RBAC.contains(&r.resource)
        || matches!(
            (r.resource, r.subresource),
            ("secrets", _)
                | ("pods", "exec" | "attach" | "portforward")
                | ("serviceaccounts", "token")
        )
}

fn public_info(uri: &str) -> bool {
    let path = uri.split_once('?').map_or(uri, |(p, _)| p);
    PUBLIC_INFO.contains(&path)
}

/// The ClusterRoleBindings every cluster creates for `system:unauthenticated`
/// that grant it only the public paths above (health, version; the
/// ClusterRole of the same name): Kubernetes defaults, to leave as they are.
/// The README's "The fix, named" says so of each (`tests/ocsf.rs` holds the
/// two together). Not here: `system:discovery` and `system:basic-user`,
/// which bound `system:unauthenticated` only before Kubernetes 1.14 and keep
/// it on clusters upgraded from then (discovery of every API: removing it is
/// Kubernetes' own advice), and `system:service-account-issuer-discovery`,
/// bound by default to service accounts only (anonymous access through it
/// was granted by someone).
pub const DEFAULT_BINDINGS: [&str; 1] = ["system:public-info-viewer"];

/// A binding an RBAC reason names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Binding {
    ClusterRoleBinding { name: String },
    RoleBinding { namespace: String, name: String },
}

impl fmt::Display for Binding {
    /// `ClusterRoleBinding/x` or `RoleBinding/ns/x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Binding::ClusterRoleBinding { name } => write!(f, "ClusterRoleBinding/{name}"),
            Binding::RoleBinding { namespace, name } => {
                write!(f, "RoleBinding/{namespace}/{name}")
            }
        }
    }
}

impl Binding {
    /// The RBAC authorizer's reason for allowing a request, as the API
    /// server writes it (`RBAC: allowed by ClusterRoleBinding "x" of
    /// ClusterRole "y" to Group "z"`; a RoleBinding is named `"x/ns"`), read
    /// for the binding. Names are Go-quoted; a bare name up to the next
    /// space is taken too. Any other reason (another authorizer, EKS access
    /// policies, a denial) names no binding.
    pub fn from_reason(reason: &str) -> Option<Binding> {
        let rest = reason.strip_prefix("RBAC: allowed by ")?;
        let (cluster, rest) = if let Some(r) = rest.strip_prefix("ClusterRoleBinding ") {
            (true, r)
        } else {
            (false, rest.strip_prefix("RoleBinding ")?)
        };
        let name = if rest.starts_with('"') {
            go_unquote(rest)?
        } else {
            rest.split(' ').next().unwrap_or("").to_string()
        };
        let valid = |s: &str| !s.is_empty() && !s.contains('/');
        if cluster {
            valid(&name).then_some(Binding::ClusterRoleBinding { name })
        } else {
            let (name, namespace) = name.split_once('/')?;
            (valid(name) && valid(namespace)).then(|| Binding::RoleBinding {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        }
    }

    /// Whether it is one of the [`DEFAULT_BINDINGS`], to be left as it is.
    pub fn is_default(&self) -> bool {
        matches!(self, Binding::ClusterRoleBinding { name } if DEFAULT_BINDINGS.contains(&name.as_str()))
    }

    /// What to do about it, one sentence: for a default binding, leave it;
    /// for any other, review it and take the anonymous subjects out.
    pub fn remediation(&self) -> String {
        if self.is_default() {
            format!(
                "Allowed by {self}, a Kubernetes default that grants only the public health and version paths: leave it as is."
            )
        } else {
            format!(
                "Allowed by {self}: review it with `{}` and remove system:anonymous and system:unauthenticated from its subjects.",
                self.kubectl()
            )
        }
    }

    /// The command that shows it, its names quoted for a POSIX shell
    /// where they hold anything but letters, digits and `-._:@+=`.
    pub fn kubectl(&self) -> String {
        match self {
            Binding::ClusterRoleBinding { name } => {
                format!(
                    "kubectl get clusterrolebinding {} -o yaml",
                    shell_word(name)
                )
            }
            Binding::RoleBinding { namespace, name } => format!(
                "kubectl -n {} get rolebinding {} -o yaml",
                shell_word(namespace),
                shell_word(name)
            ),
        }
    }
}

/// A word a POSIX shell reads back as `s`.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._:@+=".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The string a Go `%q` verb wrote at the start of `s` (its opening quote
/// first), decoded; `None` if it is not one. Escapes: `\a \b \f \n \r \t
/// \v \\ \"`, `\xHH` and three-digit octal (bytes), `\uHHHH`, `\UHHHHHHHH`.
fn go_unquote(s: &str) -> Option<String> {
    let mut chars = s.strip_prefix('"')?.chars();
    let mut out: Vec<u8> = Vec::new();
    let mut utf8 = [0u8; 4];
    loop {
        let c = chars.next()?;
        match c {
            '"' => return Some(String::from_utf8_lossy(&out).into_owned()),
            '\\' => {
                let e = chars.next()?;
                let mut digits = |n: usize, radix: u32| -> Option<u32> {
                    let text: String = chars.by_ref().take(n).collect();
                    (text.chars().count() == n)
                        .then(|| u32::from_str_radix(&text, radix).ok())
                        .flatten()
                };
                match e {
                    'a' => out.push(0x07),
                    'b' => out.push(0x08),
                    'f' => out.push(0x0c),
                    'n' => out.push(b'\n'),
                    'r' => out.push(b'\r'),
                    't' => out.push(b'\t'),
                    'v' => out.push(0x0b),
                    '\\' | '"' => out.push(e as u8),
                    'x' => out.push(u8::try_from(digits(2, 16)?).ok()?),
                    'u' | 'U' => {
                        let c = char::from_u32(digits(if e == 'u' { 4 } else { 8 }, 16)?)?;
                        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                    }
                    '0'..='7' => {
                        let low = digits(2, 8)?;
                        let value = (e as u32 - '0' as u32) * 64 + low;
                        out.push(u8::try_from(value).ok()?);
                    }
                    _ => return None,
                }
            }
            c => out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_compare_as_ocsf_ids_and_parse_by_name() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::High > Severity::Medium);
        assert!(Severity::Low > Severity::Informational);
        let ids: Vec<u8> = Severity::ALL.iter().map(|s| s.id()).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        for s in Severity::ALL {
            assert_eq!(s.name().parse::<Severity>(), Ok(s));
            assert_eq!(s.caption().parse::<Severity>(), Ok(s));
            assert_eq!(Severity::from_id(s.id()), Some(s));
        }
        assert_eq!("info".parse::<Severity>(), Ok(Severity::Informational));
        assert!("severe".parse::<Severity>().is_err());
        assert_eq!(Severity::from_id(0), None);
    }

    #[test]
    fn bindings_are_read_from_rbac_reasons() {
        let cases = [
            (
                r#"RBAC: allowed by ClusterRoleBinding "debug-anonymous" of ClusterRole "secret-reader" to User "system:anonymous""#,
                Some("ClusterRoleBinding/debug-anonymous"),
            ),
            (
                r#"RBAC: allowed by RoleBinding "system::leader-locking-kube-scheduler/kube-system" of Role "system::leader-locking-kube-scheduler" to User "system:kube-scheduler""#,
                Some("RoleBinding/kube-system/system::leader-locking-kube-scheduler"),
            ),
            // Panther's normalised form: a bare name.
            (
                "RBAC: allowed by ClusterRoleBinding system:public-info-viewer",
                Some("ClusterRoleBinding/system:public-info-viewer"),
            ),
            // Go quoting undone.
            (
                r#"RBAC: allowed by ClusterRoleBinding "a\"b\u00e9\x41\101 c" of ClusterRole "y" to Group "z""#,
                Some("ClusterRoleBinding/a\"béAA c"),
            ),
            // No binding: other authorizers, EKS access policies, empty,
            // cut or impossible names.
            ("", None),
            ("0", None),
            (
                r#"EKS Access Policy: allowed by ClusterRoleBinding "arn:aws:iam::1:role/x+arn:aws:eks::aws:cluster-access-policy/P" of ClusterRole "p" to User "u""#,
                None,
            ),
            (r#"RBAC: allowed by ClusterRoleBinding "unterminated"#, None),
            (
                r#"RBAC: allowed by RoleBinding "no-namespace" of Role "r""#,
                None,
            ),
            (
                r#"RBAC: allowed by ClusterRoleBinding "a/b" of ClusterRole "r""#,
                None,
            ),
            (
                r#"RBAC: allowed by ClusterRoleBinding "bad\q" of ClusterRole "r""#,
                None,
            ),
            (
                r#"RBAC: allowed by ClusterRoleBinding "" of ClusterRole "r""#,
                None,
            ),
        ];
        for (reason, want) in cases {
            let got = Binding::from_reason(reason).map(|b| b.to_string());
            assert_eq!(got.as_deref(), want, "{reason}");
        }
    }

    #[test]
    fn only_the_default_cluster_role_bindings_are_left_as_they_are() {
        let crb = |name: &str| Binding::ClusterRoleBinding { name: name.into() };
        let public = crb("system:public-info-viewer");
        assert!(public.is_default());
        let fix = public.remediation();
        assert!(fix.contains("Kubernetes default") && fix.contains("leave it as is"));
        assert!(!fix.contains("remove"), "{fix}");
        // A RoleBinding of the same name, another case, or another
        // default-looking name is someone's grant: remove the subjects.
        for b in [
            Binding::RoleBinding {
                namespace: "kube-system".into(),
                name: "system:public-info-viewer".into(),
            },
            crb("System:public-info-viewer"),
            crb("system:public-info-viewer-x"),
            crb("system:discovery"),
            crb("debug-anonymous"),
        ] {
            assert!(!b.is_default(), "{b}");
            let fix = b.remediation();
            assert!(
                fix.contains(&b.kubectl())
                    && fix.contains("remove system:anonymous and system:unauthenticated"),
                "{fix}"
            );
        }
    }

    #[test]
    fn the_kubectl_command_quotes_what_a_shell_would_read() {
        let b = Binding::ClusterRoleBinding {
            name: "debug-anonymous".into(),
        };
        assert_eq!(
            b.kubectl(),
            "kubectl get clusterrolebinding debug-anonymous -o yaml"
        );
        let b = Binding::RoleBinding {
            namespace: "kube-system".into(),
            name: "system::leader-locking".into(),
        };
        assert_eq!(
            b.kubectl(),
            "kubectl -n kube-system get rolebinding system::leader-locking -o yaml"
        );
        let b = Binding::ClusterRoleBinding {
            name: "x'; rm -rf ~ #".into(),
        };
        assert_eq!(
            b.kubectl(),
            r#"kubectl get clusterrolebinding 'x'\''; rm -rf ~ #' -o yaml"#
        );
    }
}
