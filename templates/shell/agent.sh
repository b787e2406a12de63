#!/usr/bin/env bash
# {{name}}: POST {"prompt": "..."} and get {"answer": "..."}.
#
# The request arrives on stdin as a CloudEvent: `jq '.data'` is the caller's JSON body. Stdout is
# the response body; stderr goes to the invocation's logs, never to the caller. The HTTP status
# and Content-Type can be set by writing CGI-style lines to $CLRK_METADATA_RESPONSE_HEADERS.
set -uo pipefail

fail() { # status type message; the invocation id is the envelope's (see warm start below)
  echo "{{name}}: $3" >&2
  printf 'Status: %s\nContent-Type: application/json\n' "$1" >>"$CLRK_METADATA_RESPONSE_HEADERS"
  jq -c --arg type "$2" --arg message "$3" \
    '{error: {type: $type, message: $message, invocationId: (.clrkinvocationid // "")}}' <<<"$event"
  exit 0
}

# Warm start (`spec.warmStart: true`): clrk starts this script before its request comes, and
# writes the request to stdin once a line came on $CLRK_READY_FD. Put slow set-up (loading files,
# starting a program to talk to) above this line; what is per request (the invocation id, the
# deadline, `traceparent`) is in the envelope then, not in the environment. Without warm start
# the variable is unset and the line does nothing.
[ -n "${CLRK_READY_FD:-}" ] && echo ready >&"$CLRK_READY_FD"

event=$(cat)
prompt=$(jq -r '.data.prompt? // empty | strings' <<<"$event" 2>/dev/null)
[ -n "$prompt" ] || fail 400 bad_input 'the body must be a JSON object with "prompt": a non-empty string'

system='You are a helpful assistant. Answer briefly.'

# Print mode, no tools, no session files, no CLAUDE.md from parent folders. The prompt goes on
# stdin: a prompt starting with "-" would be read as a flag.
answer=$(claude -p --bare --no-session-persistence --tools "" --output-format json \
  --model "${ANTHROPIC_MODEL:-claude-haiku-4-5}" --system-prompt "$system" <<<"$prompt")
status=$?
# The CLI reports API errors with subtype "success" and exit 1: read is_error too.
if [ "$status" -ne 0 ] || ! jq -e '.is_error == false' >/dev/null 2>&1 <<<"$answer"; then
  echo "{{name}}: claude exited with status $status: $answer" >&2
  fail 502 model_error "claude failed: $(jq -r '.result // "no answer"' <<<"$answer" 2>/dev/null)"
fi
jq -c '{answer: .result}' <<<"$answer"
