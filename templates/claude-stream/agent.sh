#!/usr/bin/env bash
# {{name}}: POST {"prompt": "..."} and watch Claude work: each event of the Claude Code CLI
# (`--output-format stream-json`) is one line of stdout, written the moment the CLI writes it.
#
# Called with `Accept: text/event-stream` (`clrk invoke --follow`), each line travels as one SSE
# `output` event as it is written, then an `outcome` event says how it ended. Called buffered,
# the body is every line (NDJSON, application/x-ndjson): the last one is the CLI's `result`
# event, whose `.result` is the answer (`tail -n 1 | jq -r .result`), or on failure clrk's error
# object with status 502.
#
# The request arrives on stdin as a CloudEvent: `jq '.data'` is the caller's JSON body. Stderr
# goes to the invocation's logs, never to the caller. The HTTP status and Content-Type are
# CGI-style lines written to $CLRK_METADATA_RESPONSE_HEADERS (read when the agent exits).
set -uo pipefail

error() { # type message: clrk's error object, one line
  jq -cn --arg type "$1" --arg message "$2" --arg id "${CLRK_METADATA_INVOCATION_ID:-}" \
    '{error: {type: $type, message: $message, invocationId: $id}}'
}

event=$(cat)
prompt=$(jq -r '.data.prompt? // empty | strings' <<<"$event" 2>/dev/null)
if [ -z "$prompt" ]; then
  echo "{{name}}: no prompt in the request" >&2
  printf 'Status: 400\nContent-Type: application/json\n' >>"$CLRK_METADATA_RESPONSE_HEADERS"
  error bad_input 'the body must be a JSON object with "prompt": a non-empty string'
  exit 0
fi

system='You are a helpful assistant. Answer briefly.'
printf 'Content-Type: application/x-ndjson\n' >>"$CLRK_METADATA_RESPONSE_HEADERS"

# Print mode, no tools, no session files, no CLAUDE.md from parent folders. stream-json needs
# --verbose; --include-partial-messages adds the model's text as it is generated
# (`stream_event` lines), not only each whole message. The prompt goes on stdin: a prompt
# starting with "-" would be read as a flag. tee passes each line on at once and keeps a copy
# in this invocation's own TMPDIR, to read the last line from.
events="${TMPDIR:-/tmp}/events.jsonl"
claude -p --bare --no-session-persistence --tools "" --output-format stream-json --verbose \
  --include-partial-messages --model "${ANTHROPIC_MODEL:-claude-haiku-4-5}" --system-prompt "$system" \
  <<<"$prompt" | tee "$events"
status=${PIPESTATUS[0]}
last=$(tail -n 1 "$events")
# The CLI reports API errors with subtype "success" and exit 1: read is_error too.
if [ "$status" -ne 0 ] || ! jq -e '.type == "result" and .is_error == false' >/dev/null 2>&1 <<<"$last"; then
  echo "{{name}}: claude exited with status $status: $last" >&2
  printf 'Status: 502\n' >>"$CLRK_METADATA_RESPONSE_HEADERS"
  reason=$(jq -r '.result // empty' <<<"$last" 2>/dev/null)
  error model_error "claude failed: ${reason:-no answer (exit status $status)}"
fi
exit 0
