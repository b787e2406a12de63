#!/usr/bin/env python3
"""{{name}}: POST {"prompt": "..."} and get {"answer": "..."}.

The request arrives on stdin as a CloudEvent (structured JSON): ``event["data"]`` is the caller's
JSON body. Stdout is the response body; stderr goes to the invocation's logs, never to the
caller. The HTTP status and Content-Type are set by writing CGI-style lines to the file named by
$CLRK_METADATA_RESPONSE_HEADERS. Standard library only.

Warm start (``spec.warmStart: true``, docs/agents.md in clrk): clrk runs this file before its
request comes, and writes the request to stdin once a line came on $CLRK_READY_FD. What runs
before main() reads stdin (the imports, and whatever you load at module level: a client, a
model, data files) is paid then, not by the caller. Per-request metadata (the invocation id, the
deadline, ``traceparent``) is in the envelope, not in the environment, when started ahead.
"""

# Start-up: import (and load) the slow things here, before the request.
import json
import os
import subprocess
import sys

NAME = "{{name}}"
SYSTEM = "You are a helpful assistant. Answer briefly."


class Failure(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def read_prompt(event: dict) -> str:
    data = event.get("data")
    prompt = data.get("prompt") if isinstance(data, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise Failure(400, "bad_input", 'the body must be a JSON object with "prompt": a non-empty string')
    return prompt


def ask_claude(prompt: str) -> str:
    # Print mode, no tools, no session files, no CLAUDE.md from parent folders. The prompt goes
    # on stdin: a prompt starting with "-" would be read as a flag.
    model = os.environ.get("ANTHROPIC_MODEL", "claude-haiku-4-5")
    argv = ["claude", "-p", "--bare", "--no-session-persistence", "--tools", "", "--output-format", "json"]
    argv += ["--model", model, "--system-prompt", SYSTEM]
    done = subprocess.run(argv, input=prompt, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr)
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = {}
    # The CLI reports API errors with subtype "success" and exit 1: read is_error too.
    if done.returncode != 0 or answer.get("is_error") is not False:
        print(f"{NAME}: claude exited with status {done.returncode}: {done.stdout}", file=sys.stderr)
        raise Failure(502, "model_error", f"claude failed: {answer.get('result') or 'no answer'}")
    return str(answer.get("result", ""))


def respond(status: int, body: dict) -> None:
    with open(os.environ["CLRK_METADATA_RESPONSE_HEADERS"], "a", encoding="utf-8") as headers:
        headers.write(f"Status: {status}\nContent-Type: application/json\n")
    print(json.dumps(body))


def say_ready() -> None:
    """Warm start: one line on $CLRK_READY_FD says the start-up is done (unset without it)."""
    fd = os.environ.get("CLRK_READY_FD")
    if fd:
        with os.fdopen(int(fd), "w") as ready:
            ready.write("ready\n")


def main() -> None:
    say_ready()
    event: dict = {}
    try:
        try:
            event = json.load(sys.stdin)
        except ValueError:
            raise Failure(400, "bad_input", "the request is not a CloudEvent in JSON") from None
        respond(200, {"answer": ask_claude(read_prompt(event))})
    except Failure as failure:
        print(f"{NAME}: {failure.message}", file=sys.stderr)
        # The envelope's: started ahead (warm start), the agent has no $CLRK_METADATA_INVOCATION_ID.
        invocation = event.get("clrkinvocationid") or os.environ.get("CLRK_METADATA_INVOCATION_ID", "")
        error = {"type": failure.kind, "message": failure.message, "invocationId": invocation}
        respond(failure.status, {"error": error})


if __name__ == "__main__":
    main()
