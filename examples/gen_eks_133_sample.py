#!/usr/bin/env python3
"""Writes examples/eks-1.33-audit-sample.jsonl: one synthetic day
(2026-11-30) of an EKS 1.33 cluster's API server audit log, one event per
line, as CloudWatch Logs holds them (the `message` of each log event).

Nothing in it comes from a real cluster: every address, name, token outcome
and ID is made up here (documentation and private address ranges; the
auditIDs come from a seeded generator, so a run writes the same bytes every
time). The shapes follow the kubernetes API server's source
(github.com/kubernetes/kubernetes), read at these commits:

- staging/src/k8s.io/apiserver/pkg/endpoints/filters/authn_audit.go
  (2b02db1be88b09193d96585c4b6dd796d6b2e06c and
  18aec815e30e803b70d0d1556ecf0c8c41ca0acd): WithFailedAuthenticationAudit
  writes ONE event for a refused authentication, at stage ResponseStarted,
  with the request's fields, no user (`"user":{}`), no authorization
  annotations, and responseStatus.message from getAuthMethods:
  "Authentication failed, no credentials provided", or
  "Authentication failed, attempted: " + the methods joined by ", " in the
  order basic (Basic auth header), bearer (`Authorization: Bearer x`),
  access_token (?access_token= in the URL), x509 (a client certificate).
- staging/src/k8s.io/apiserver/pkg/apis/audit/v1/types.go
  (0a40c4e8a5678c0e8f4d01291875b754b0fc76fa): the field order of Event
  (kind, apiVersion, level, auditID, stage, requestURI, verb, user,
  sourceIPs, userAgent, objectRef, responseStatus, requestReceivedTimestamp,
  stageTimestamp, annotations) and of ObjectReference (resource, namespace,
  name, uid, apiGroup, apiVersion, ...); `user` is not omitempty, so an
  event without a user writes `"user":{}`.
- staging/src/k8s.io/apiserver/pkg/audit/request.go
  (bbc59348318c29199e23b27981fb56436ac68705, NewEventFromRequest): verb,
  requestURI, userAgent, sourceIPs (X-Forwarded-For first, then the
  connection's address), objectRef only for resource requests.
- staging/src/k8s.io/apiserver/pkg/endpoints/filters/audit.go
  (04791b4906602ffda5ccf9bc4c84d3329f1d7080): RequestReceived's
  stageTimestamp is the requestReceivedTimestamp; processCode sets only
  responseStatus.code on the way out (so a 200 is `{"metadata":{},"code":200}`).

metav1.Status marshals as {"metadata":{},"status":..,"message":..,"reason":..,"code":..}
with empty fields left out (ListMeta is a struct, so "metadata":{} stays).

CAVEAT (see examples/README-samples.md): kube-apiserver's own failed handler
(filters.Unauthorized -> responsewriters.ErrorNegotiated ->
WriteObjectNegotiated) calls audit.LogResponseObject before it writes the
401, and that copies the Unauthorized Status over the message authn_audit.go
set. Real kube-apiserver logs therefore show
{"metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}
(or, before Message was copied, without "message"). This sample keeps the
message authn_audit.go writes, `{"metadata":{},"message":"Authentication
failed, ...","code":401}` (what WithFailedAuthenticationAudit produces by
itself, and what apiservers whose failed handler does not go through
WriteObjectNegotiated log), so that the `credential` column has something
to read. Set APISERVER_STATUS = True to write the overwritten shape instead.

Two records are cut as CloudWatch Logs cuts an event over its 256 KB limit:
the first 262,144 bytes of the message, then the literal `[Truncated...]`.
Both are padded through X-Forwarded-For (sourceIPs holds ~17,000 addresses),
so the cut falls inside sourceIPs.

Run: python3 examples/gen_eks_133_sample.py  (writes the file beside it).
"""

import datetime as dt
import json
import os
import random
import uuid

APISERVER_STATUS = False

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eks-1.33-audit-sample.jsonl")
RNG = random.Random(20261130)
DAY = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)
CUT_AT = 262_144
CUT_SUFFIX = "[Truncated...]"

NO_CREDS = "Authentication failed, no credentials provided"
PUBLIC_INFO_REASON = ('RBAC: allowed by ClusterRoleBinding "system:public-info-viewer" of '
                      'ClusterRole "system:public-info-viewer" to Group "system:unauthenticated"')
ANONYMOUS = {"username": "system:anonymous", "groups": ["system:unauthenticated"]}


def attempted(*methods):
    return "Authentication failed, attempted: " + ", ".join(methods)


def audit_id():
    return str(uuid.UUID(int=RNG.getrandbits(128), version=4))


def ts(t):
    # metav1.MicroTime: RFC 3339, 6 fractional digits, UTC as Z.
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def go_json(obj):
    # encoding/json: no spaces, keys in struct order (dict order here),
    # map keys sorted (done by the callers), <, > and & escaped.
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def event(*, stage, uri, verb, user, source_ips, user_agent, received, took_ms,
          object_ref=None, status=None, annotations=None, level="Metadata"):
    ev = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level,
          "auditID": audit_id(), "stage": stage, "requestURI": uri, "verb": verb,
          "user": user, "sourceIPs": source_ips, "userAgent": user_agent}
    if object_ref is not None:
        order = ["resource", "namespace", "name", "uid", "apiGroup", "apiVersion",
                 "resourceVersion", "subresource"]
        ev["objectRef"] = {k: object_ref[k] for k in order if object_ref.get(k)}
    if status is not None:
        ev["responseStatus"] = status
    ev["requestReceivedTimestamp"] = ts(received)
    stage_t = received if stage == "RequestReceived" else received + dt.timedelta(milliseconds=took_ms)
    ev["stageTimestamp"] = ts(stage_t)
    if annotations:
        ev["annotations"] = dict(sorted(annotations.items()))
    return ev


def refused_status(message):
    if APISERVER_STATUS:
        return {"metadata": {}, "status": "Failure", "message": "Unauthorized",
                "reason": "Unauthorized", "code": 401}
    return {"metadata": {}, "message": message, "code": 401}


def resource_of(uri):
    """The verb and objectRef the request info resolver gives the paths used here."""
    path = uri.split("?")[0]
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"] and len(parts) >= 3:
        rest = parts[2:]
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        ref = {"resource": rest[0], "namespace": ns, "apiVersion": "v1"}
        if len(rest) >= 2:
            ref["name"] = rest[1]
            return "get", ref
        return "list", ref
    return "get", None


def refused(t, ip, ua, uri, message, took_ms=None):
    verb, ref = resource_of(uri)
    return event(stage="ResponseStarted", uri=uri, verb=verb, user={}, source_ips=[ip],
                 user_agent=ua, received=t, took_ms=took_ms or RNG.randint(1, 4),
                 object_ref=ref, status=refused_status(message))


def at(h, m, s, us):
    return DAY + dt.timedelta(hours=h, minutes=m, seconds=s, microseconds=us)


def main():
    events = []  # (time, line)

    def add(ev):
        events.append((ev["requestReceivedTimestamp"], go_json(ev)))

    # Scanner A: 198.51.100.23, zgrab, 10 rounds of 4 paths, no credentials:
    # 40 refusals.
    for r in range(10):
        for i, uri in enumerate(["/version", "/api", "/apis", "/.env"]):
            add(refused(at(2, 10 + r, i * 3, 100_000 + r * 1000 + i), "198.51.100.23",
                        "Mozilla/5.0 zgrab/0.x", uri, NO_CREDS))
    # Scanner B: 203.0.113.77, python-requests, 6 rounds of 3 paths (one a
    # resource request: list secrets in kube-system), no credentials: 18.
    for r in range(6):
        for i, uri in enumerate(["/version", "/api/v1/namespaces/kube-system/secrets", "/metrics"]):
            add(refused(at(7, 40, r * 10 + i, 250_000 + r * 1000 + i), "203.0.113.77",
                        "python-requests/2.31.0", uri, NO_CREDS))
    # Scanner C: 192.0.2.140, curl, 3 rounds of 5 paths, no credentials: 15.
    for r in range(3):
        for i, uri in enumerate(["/api", "/apis", "/.env", "/metrics", "/version"]):
            add(refused(at(13, 5, r * 20 + i, 500_000 + r * 1000 + i), "192.0.2.140",
                        "curl/8.5.0", uri, NO_CREDS))
    # Scanner D: 198.18.0.45, python-requests with a forged bearer token,
    # 4 rounds of 2 paths: 8 refusals "attempted: bearer".
    for r in range(4):
        for i, uri in enumerate(["/api/v1/namespaces/kube-system/secrets", "/api"]):
            add(refused(at(16, 20, r * 7 + i, 750_000 + r * 1000 + i), "198.18.0.45",
                        "python-requests/2.31.0", uri, attempted("bearer")))
    # A laptop with an expired token (kubectl's discovery): 2 refusals
    # "attempted: bearer".
    for i, uri in enumerate(["/api?timeout=32s", "/apis?timeout=32s"]):
        add(refused(at(9, 1, 2, 345_000 + i * 2100), "100.64.7.9",
                    "kubectl/v1.33.1 (darwin/arm64) kubernetes/8adc0f0", uri, attempted("bearer")))
    # A client certificate the cluster's CA did not sign: 1 refusal
    # "attempted: x509".
    add(refused(at(18, 44, 9, 901_234), "198.18.5.200", "Go-http-client/2.0", "/apis",
                attempted("x509")))

    # Anonymous health checks, allowed (system:public-info-viewer): two
    # monitors x 3 paths, each request logged at RequestReceived and
    # ResponseComplete: 12 events.
    monitors = [("192.0.2.10", "Blackbox-Exporter/0.25.0"), ("198.51.100.200", "UptimeRobot/2.0")]
    for k, (ip, ua) in enumerate(monitors):
        for i, uri in enumerate(["/healthz", "/livez", "/readyz"]):
            t = at(4 + k * 8, 0, i * 15, 10_000 + i * 111)
            add(event(stage="RequestReceived", uri=uri, verb="get", user=ANONYMOUS,
                      source_ips=[ip], user_agent=ua, received=t, took_ms=0))
            add(event(stage="ResponseComplete", uri=uri, verb="get", user=ANONYMOUS,
                      source_ips=[ip], user_agent=ua, received=t, took_ms=2,
                      status={"metadata": {}, "code": 200},
                      annotations={"authorization.k8s.io/decision": "allow",
                                   "authorization.k8s.io/reason": PUBLIC_INFO_REASON}))

    # Authenticated traffic, not reported by any rule: 30 events.
    nodes = ["ip-10-0-12-34.ec2.internal", "ip-10-0-45-67.ec2.internal", "ip-10-0-78-90.ec2.internal"]
    for n in range(18):
        node = nodes[n % 3]
        t = at(n, 17, n, 400_000 + n)
        add(event(stage="ResponseComplete",
                  uri=f"/api/v1/nodes/{node}?timeout=10s", verb="get",
                  user={"username": f"system:node:{node}", "groups": ["system:nodes", "system:authenticated"]},
                  source_ips=["10.0." + str(12 + 33 * (n % 3)) + ".34"],
                  user_agent="kubelet/v1.33.5 (linux/amd64) kubernetes/2f1b4c5",
                  received=t, took_ms=3, object_ref={"resource": "nodes", "name": node, "apiVersion": "v1"},
                  status={"metadata": {}, "code": 200},
                  annotations={"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}))
    for n in range(8):
        t = at(n * 3, 30, 1, 600_000 + n)
        add(event(stage="ResponseComplete",
                  uri="/api/v1/namespaces/kube-system/configmaps?resourceVersion=0", verb="list",
                  user={"username": "system:serviceaccount:kube-system:coredns",
                        "uid": "5b0e1f2a-6c3d-4e5f-8a9b-0c1d2e3f4a5b",
                        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                                   "system:authenticated"]},
                  source_ips=["10.0.45.201"],
                  user_agent="coredns/v1.11.4 (linux/amd64) kubernetes/$Format",
                  received=t, took_ms=5,
                  object_ref={"resource": "configmaps", "namespace": "kube-system", "apiVersion": "v1"},
                  status={"metadata": {}, "code": 200},
                  annotations={"authorization.k8s.io/decision": "allow",
                               "authorization.k8s.io/reason": 'RBAC: allowed by ClusterRoleBinding "system:coredns" of ClusterRole "system:coredns" to ServiceAccount "coredns/kube-system"'}))
    for n, (verb, uri, ref) in enumerate([
            ("list", "/api/v1/namespaces/default/pods?limit=500", {"resource": "pods", "namespace": "default", "apiVersion": "v1"}),
            ("get", "/apis/apps/v1/namespaces/shop/deployments/checkout", {"resource": "deployments", "namespace": "shop", "name": "checkout", "apiGroup": "apps", "apiVersion": "v1"}),
            ("list", "/api/v1/namespaces/kube-system/secrets?limit=500", {"resource": "secrets", "namespace": "kube-system", "apiVersion": "v1"}),
            ("get", "/version?timeout=32s", None)]):
        t = at(10, 2 + n, 5, 120_000 + n)
        add(event(stage="ResponseComplete", uri=uri, verb=verb,
                  user={"username": "kubernetes-admin",
                        "uid": "aws-iam-authenticator:123456789012:AIDAEXAMPLEADMIN0001",
                        "groups": ["system:authenticated"],
                        "extra": {"accessKeyId": ["AKIAIOSFODNN7EXAMPLE"],
                                  "arn": ["arn:aws:iam::123456789012:user/admin"],
                                  "canonicalArn": ["arn:aws:iam::123456789012:user/admin"],
                                  "principalId": ["AIDAEXAMPLEADMIN0001"],
                                  "sessionName": [""]}},
                  source_ips=["100.64.7.9"],
                  user_agent="kubectl/v1.33.1 (darwin/arm64) kubernetes/8adc0f0",
                  received=t, took_ms=9, object_ref=ref, status={"metadata": {}, "code": 200},
                  annotations={"authorization.k8s.io/decision": "allow",
                               "authorization.k8s.io/reason": "EKS Access policy is allowed by ClusterRole \"arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy\""}))
    # A 401 WITH a user (a webhook-authenticated CI account refused later):
    # not a refused authentication, reported by no rule.
    add(event(stage="ResponseComplete", uri="/apis/batch/v1/namespaces/default/jobs", verb="create",
              user={"username": "system:serviceaccount:default:ci", "groups": ["system:authenticated"]},
              source_ips=["10.0.78.15"], user_agent="argo-workflows/v3.6.2", received=at(11, 11, 11, 111_111),
              took_ms=14, object_ref={"resource": "jobs", "namespace": "default", "apiGroup": "batch", "apiVersion": "v1"},
              status={"metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}))

    # The two cut records, padded through X-Forwarded-For.
    def padding(seed):
        r = random.Random(seed)
        return [f"{r.randint(1, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
                for _ in range(17_000)]

    def cut(ev):
        line = go_json(ev).encode()
        assert len(line) > CUT_AT
        return (line[:CUT_AT].decode("ascii") + CUT_SUFFIX)

    ev = refused(at(21, 3, 3, 333_333), "x", "python-requests/2.31.0",
                 "/api/v1/namespaces/kube-system/secrets", NO_CREDS)
    ev["sourceIPs"] = padding(1) + ["203.0.113.77"]
    events.append((ev["requestReceivedTimestamp"], cut(ev)))
    ev = event(stage="ResponseComplete", uri="/healthz", verb="get", user=ANONYMOUS,
               source_ips=padding(2) + ["192.0.2.66"], user_agent="curl/8.5.0",
               received=at(22, 22, 22, 222_222), took_ms=2, status={"metadata": {}, "code": 200},
               annotations={"authorization.k8s.io/decision": "allow",
                            "authorization.k8s.io/reason": PUBLIC_INFO_REASON})
    events.append((ev["requestReceivedTimestamp"], cut(ev)))

    events.sort(key=lambda e: e[0])
    with open(OUT, "w", encoding="ascii", newline="\n") as f:
        for _, line in events:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
