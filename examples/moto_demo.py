"""Loads the bundled sample into a CloudWatch Logs emulator as an EKS
cluster's audit log, so `kubeanon poll` can be tried without AWS.

    .venv/bin/moto_server -p 5000 &            # tests/run installed it
    .venv/bin/python examples/moto_demo.py http://127.0.0.1:5000

creates log group /aws/eks/demo/cluster with an audit stream and the
sample's events, spread over the last 30 minutes. Needs boto3 (moto's
server brings it). Uses the dummy credentials moto accepts.
"""
import os
import sys
import time

import boto3

endpoint = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:5000"
logs = boto3.client(
    "logs",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
group = "/aws/eks/demo/cluster"
stream = "kube-apiserver-audit-0123456789abcdef0123456789abcdef"
try:
    logs.create_log_group(logGroupName=group)
except logs.exceptions.ResourceAlreadyExistsException:
    sys.exit(f"{group} exists already: restart the emulator for a fresh demo")
logs.create_log_stream(logGroupName=group, logStreamName=stream)
sample = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eks-audit-sample.jsonl")
with open(sample, encoding="utf-8") as f:
    lines = [line.rstrip("\n") for line in f if line.strip()]
start = int(time.time() * 1000) - 30 * 60 * 1000
events = [{"timestamp": start + i * 1000, "message": m} for i, m in enumerate(lines)]
logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
print(f"{len(events)} events in {group} at {endpoint}")
