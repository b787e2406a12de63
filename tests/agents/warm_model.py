#!/usr/bin/python3
"""Warm start's model calls: one while it starts, one for its request (tests/integration/dev/test_warm_start.py).

While it starts (before it writes to $CLRK_READY_FD, when set) it calls the model through
$HTTPS_PROXY on a connection it keeps open, and says what it got on stderr ("start-up call:
STATUS"). For its request it calls again on that connection, or, that one being closed, on a new
one; with data {"reuse": PROXY_URL} it calls through that proxy URL instead, saying "reused" to
the model. It answers a JSON report: those statuses, its envelope's per-request attributes, the
per-request variables of its environment and its proxy URL. argv[1] is the Messages API body.
Standard library only (run by the host's /usr/bin/python3, -I).
"""

import base64
import http.client
import json
import os
import ssl
import sys
import urllib.parse

BODY = sys.argv[1]


def connect(proxy_url: str) -> http.client.HTTPSConnection:
    proxy = urllib.parse.urlsplit(proxy_url)
    context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    conn = http.client.HTTPSConnection(proxy.hostname or "", proxy.port, context=context, timeout=20)
    user = urllib.parse.unquote(proxy.username or "")
    password = urllib.parse.unquote(proxy.password or "")
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    conn.set_tunnel("api.anthropic.com", 443, headers={"Proxy-Authorization": "Basic " + auth})
    return conn


def call(conn: http.client.HTTPSConnection, body: str = BODY) -> int:
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    conn.request("POST", "/v1/messages", body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status


early = connect(os.environ["HTTPS_PROXY"])
print(f"start-up call: {call(early)}", file=sys.stderr, flush=True)
ready = os.environ.get("CLRK_READY_FD")
if ready:
    os.write(int(ready), b"ready\n")
    os.close(int(ready))
event = json.loads(sys.stdin.read())
data = event.get("data") or {}
report: dict[str, object] = {
    "envelope": {k: event.get(k) for k in ("clrkinvocationid", "clrkdeadline", "traceparent")},
    "env": {k: os.environ.get(k) for k in ("CLRK_METADATA_INVOCATION_ID", "CLRK_METADATA_DEADLINE", "TRACEPARENT")},
    "proxy": os.environ["HTTPS_PROXY"],
}
if "reuse" in data:  # someone else's proxy credentials
    try:
        report["reused"] = call(connect(data["reuse"]), BODY.replace('"hi"', '"reused"'))
    except (OSError, http.client.HTTPException) as refused:
        report["reused"] = str(refused)
else:
    try:
        report["call"] = call(early)
        report["start-up connection"] = "kept"
    except (OSError, http.client.HTTPException):
        early.close()
        report["call"] = call(connect(os.environ["HTTPS_PROXY"]))
        report["start-up connection"] = "closed"
print(json.dumps(report))
