"""A Splunk HTTP Event Collector for the tests: no Splunk server installs
here, so this follows Splunk's documented HEC protocol ("Format events for
HTTP Event Collector", "About HTTP Event Collector Indexer
Acknowledgment", "Troubleshoot HTTP Event Collector" status codes):

- HTTPS only, with a certificate from a CA of its own (written to
  DIR/ca.pem for the test's --hec-ca);
- POST /services/collector/event with `Authorization: Splunk <token>`:
  401 code 2 without a token, 403 code 4 for a wrong one; 400 code 5 for
  no data, 6 for bad JSON, 12 for an event without `event`, 10 when
  acknowledgement is on and no channel is given; 503 code 9 while busy;
  200 code 0 with an `ackId` per post when acknowledgement is on;
- POST /services/collector/ack?channel=C with {"acks":[ids]}: 400 code 14
  when acknowledgement is off, else {"acks":{"id":bool}}.

What it does is set by DIR/control.json, read on every request:
{"token": "...", "ack": true|false, "busy": N (answer the next N event
posts 503), "acks": "now"|"never"|"after:SECONDS"}. Every accepted event
is appended to DIR/events.jsonl with its channel and ackId, and every
answer's status and path to DIR/answers.log.

    python hec_receiver.py PORT DIR
"""

import datetime
import http.server
import ipaddress
import json
import os
import ssl
import sys
import threading
import time
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PORT = int(sys.argv[1])
DIR = sys.argv[2]
LOCK = threading.RLock()
STATE = {"busy_answered": 0, "next_ack": 0, "issued": {}}


def certificates():
    """A CA, and a server certificate it signs for 127.0.0.1."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeanon test HEC CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    with open(os.path.join(DIR, "server.pem"), "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(os.path.join(DIR, "server.key"), "wb") as f:
        f.write(
            key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    tmp = os.path.join(DIR, "ca.pem.tmp")
    with open(tmp, "wb") as f:
        f.write(ca.public_bytes(pem))
    os.rename(tmp, os.path.join(DIR, "ca.pem"))


def control():
    with open(os.path.join(DIR, "control.json")) as f:
        return json.load(f)


def events(body):
    """HEC's event endpoint takes JSON objects one after another."""
    decoder = json.JSONDecoder()
    text = body.decode("utf-8")
    i, out = 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        with LOCK:
            with open(os.path.join(DIR, "answers.log"), "a") as f:
                f.write(f"{status} {urlparse(self.path).path}\n")
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        c = control()
        url = urlparse(self.path)
        channel = self.headers.get("X-Splunk-Request-Channel") or parse_qs(url.query).get(
            "channel", [None]
        )[0]
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Splunk ") or not auth[len("Splunk "):]:
            return self.answer(401, {"text": "Token is required", "code": 2})
        if auth[len("Splunk "):] != c["token"]:
            return self.answer(403, {"text": "Invalid token", "code": 4})
        if url.path == "/services/collector/ack":
            return self.ack(c, channel, body)
        if url.path not in ("/services/collector/event", "/services/collector"):
            return self.answer(404, {"text": "The requested URL was not found on this server.", "code": 404})
        if c.get("ack") and not channel:
            return self.answer(400, {"text": "Data channel is missing", "code": 10})
        if not body.strip():
            return self.answer(400, {"text": "No data", "code": 5})
        with LOCK:
            if STATE["busy_answered"] < c.get("busy", 0):
                STATE["busy_answered"] += 1
                return self.answer(503, {"text": "Server is busy", "code": 9})
        try:
            objs = events(body)
        except ValueError:
            return self.answer(400, {"text": "Invalid data format", "code": 6})
        for o in objs:
            if "event" not in o:
                return self.answer(400, {"text": "Event field is required", "code": 12})
            if o["event"] in ("", None):
                return self.answer(400, {"text": "Event field cannot be blank", "code": 13})
        with LOCK:
            ack_id = STATE["next_ack"]
            STATE["next_ack"] += 1
            STATE["issued"][(channel, ack_id)] = time.time()
            with open(os.path.join(DIR, "events.jsonl"), "a") as f:
                for o in objs:
                    f.write(json.dumps({"channel": channel, "ackId": ack_id, "hec": o}) + "\n")
        if c.get("ack"):
            return self.answer(200, {"text": "Success", "code": 0, "ackId": ack_id})
        return self.answer(200, {"text": "Success", "code": 0})

    def ack(self, c, channel, body):
        if not c.get("ack"):
            return self.answer(400, {"text": "ACK is disabled", "code": 14})
        if not channel:
            return self.answer(400, {"text": "Data channel is missing", "code": 10})
        try:
            ids = json.loads(body or b"{}").get("acks", [])
        except ValueError:
            return self.answer(400, {"text": "Invalid data format", "code": 6})
        mode = c.get("acks", "now")
        out = {}
        with LOCK:
            for i in ids:
                sent = STATE["issued"].get((channel, i))
                if sent is None or mode == "never":
                    out[str(i)] = False
                elif mode.startswith("after:"):
                    out[str(i)] = time.time() - sent >= float(mode[len("after:"):])
                else:
                    out[str(i)] = True
        with open(os.path.join(DIR, "acks.jsonl"), "a") as f:
            f.write(json.dumps({"channel": channel, "acks": out}) + "\n")
        return self.answer(200, {"acks": out})


def main():
    certificates()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(DIR, "server.pem"), os.path.join(DIR, "server.key"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
