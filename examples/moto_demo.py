"""Loads the bundled sample into a CloudWatch Logs emulator as an EKS
cluster's audit log, so `kubeanon poll` can be tried without AWS.

    examples/walkthrough.sh                      # starts moto, runs this

or by hand, with moto's server (PyPI `moto[server]`) installed:

    .venv/bin/moto_server -p 5000 &
    .venv/bin/python examples/moto_demo.py http://127.0.0.1:5000
    .venv/bin/python examples/moto_demo.py http://127.0.0.1:5000 --more

The first run creates log group /aws/eks/demo/cluster with an audit stream
and the sample's events, spread over the last 30 minutes, the EKS cluster
`demo` (version 1.33, audit logging on: `--all-clusters` finds it) and the
S3 bucket `kubeanon-demo` (for `--checkpoint s3://...` and `--deliver`). `--more` adds
what a scheduled run would find next: three events stamped now, two of
them anonymous (the sample's `/version` probe and its allowed `list
secrets`, again, as new requests) and one authenticated (not a finding).
Needs boto3 (moto's server brings it). Uses the dummy credentials moto
accepts.
"""
import json
import os
import sys
import time
import uuid
from datetime import datetime, timezone

import boto3

args = [a for a in sys.argv[1:] if not a.startswith("--")]
more = "--more" in sys.argv[1:]
endpoint = args[0] if args else "http://127.0.0.1:5000"


def client(service):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


logs = client("logs")
group = "/aws/eks/demo/cluster"
stream = "kube-apiserver-audit-0123456789abcdef0123456789abcdef"
sample = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eks-audit-sample.jsonl")
with open(sample, encoding="utf-8") as f:
    lines = [line.rstrip("\n") for line in f if line.strip()]

if more:
    if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        sys.exit(f"{group} does not exist: load the sample first (without --more)")

    def parsed(line):
        try:
            return json.loads(line)
        except ValueError:
            return None

    events = [e for e in map(parsed, lines) if e]
    anonymous = [e for e in events if e["user"].get("username") == "system:anonymous"]
    picks = [
        next(e for e in anonymous if e["requestURI"] == "/version" and e["responseStatus"]["code"] == 200),
        next(e for e in anonymous if "debug-anonymous" in json.dumps(e)),
        next(e for e in events if e["user"].get("username") != "system:anonymous"),
    ]
    now_ms = int(time.time() * 1000)
    stamp = datetime.fromtimestamp(now_ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    added = []
    for n, e in enumerate(picks):
        e = dict(e, auditID=str(uuid.uuid4()), requestReceivedTimestamp=stamp, stageTimestamp=stamp)
        added.append({"timestamp": now_ms + n, "message": json.dumps(e, separators=(",", ":"))})
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=added)
    print(f"{len(added)} more events in {group} at {endpoint} (2 anonymous)")
    sys.exit(0)

try:
    logs.create_log_group(logGroupName=group)
except logs.exceptions.ResourceAlreadyExistsException:
    sys.exit(f"{group} exists already: restart the emulator for a fresh demo")
# The cluster itself, audit logging on, so `--all-clusters` discovers it
# and its Kubernetes version is known; and a bucket for S3 state.
client("eks").create_cluster(
    name="demo",
    version="1.33",
    roleArn="arn:aws:iam::123456789012:role/eks",
    resourcesVpcConfig={},
    logging={"clusterLogging": [{"types": ["audit", "api"], "enabled": True}]},
)
client("s3").create_bucket(Bucket="kubeanon-demo")
logs.create_log_stream(logGroupName=group, logStreamName=stream)
start = int(time.time() * 1000) - 30 * 60 * 1000
events = [{"timestamp": start + i * 1000, "message": m} for i, m in enumerate(lines)]
logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
print(f"{len(events)} events in {group} at {endpoint}")
print("EKS cluster demo (1.33, audit logging on) and S3 bucket kubeanon-demo")
