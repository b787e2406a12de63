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
#
# Warm start (`spec.warmStart: true`, docs/agents.md in clrk): the Claude CLI is started, and its
# lazy start-up done, before the request is read, while the sandbox waits for its request; the
# line written to $CLRK_READY_FD tells clrk it is done. Without warm start (the variable unset)
# the CLI starts the same way once the request is there. Either way, one CLI answers one request;
# the invocation id comes from the envelope (`clrkinvocationid`): an agent started ahead has no
# $CLRK_METADATA_INVOCATION_ID.
set -uo pipefail

invocation=${CLRK_METADATA_INVOCATION_ID:-}
error() { # type message: clrk's error object, one line
  jq -cn --arg type "$1" --arg message "$2" --arg id "$invocation" \
    '{error: {type: $type, message: $message, invocationId: $id}}'
}

system='You are a helpful assistant. Answer briefly.'

# Print mode, no tools, no session files, no CLAUDE.md from parent folders; messages in and
# events out as JSON lines (stream-json, which needs --verbose), so the CLI starts before its
# prompt exists. --include-partial-messages adds the model's text as it is generated
# (`stream_event` lines), not only each whole message. Its stderr is ours (the invocation's
# logs); it must not hold the readiness pipe. Bash drops a coprocess's pipes and pid once it has
# ended: it waits for a first line, written once the shell has moved them into variables of its
# own.
coproc CLAUDE {
  read -r _
  [ -z "${CLRK_READY_FD:-}" ] || exec {CLRK_READY_FD}>&-
  exec claude -p --bare --no-session-persistence --tools "" \
    --input-format stream-json --output-format stream-json --verbose --include-partial-messages \
    --model "${ANTHROPIC_MODEL:-claude-haiku-4-5}" --system-prompt "$system"
}
claude_pid=$CLAUDE_PID
exec {to_claude}>&"${CLAUDE[1]}"- {from_claude}<&"${CLAUDE[0]}"-
echo >&"$to_claude"
# A write to a CLI that died fails instead of killing the shell: its exit status is reported.
trap '' PIPE

# Warm start: the SDK's initialize request, answered once the CLI has loaded what it loads
# lazily; then say so, and wait for the request. (Without warm start the request is there
# already, and the CLI's start-up is paid with its prompt.)
if [ -n "${CLRK_READY_FD:-}" ]; then
  echo '{"type":"control_request","request_id":"init","request":{"subtype":"initialize"}}' >&"$to_claude" 2>/dev/null
  line=
  until [[ $line == *'"type":"control_response"'* ]]; do
    IFS= read -r line <&"$from_claude" && continue
    # No request yet, so no one to answer: exit non-zero; clrk logs why and starts another.
    wait "$claude_pid"
    echo "{{name}}: claude exited with status $? before it was ready" >&2
    exit 1
  done
  echo ready >&"$CLRK_READY_FD"
  exec {CLRK_READY_FD}>&-
fi

# One jq reads the envelope from stdin: the invocation id, then the user message for the CLI
# (compact JSON, one line), or nothing after the id when there is no prompt.
checked=$(jq -r '
  (.clrkinvocationid // "" | tostring),
  (.data.prompt? // empty | strings | select(. != "")
    | {type: "user", message: {role: "user", content: .}} | tojson)' 2>/dev/null)
[ -z "${checked%%$'\n'*}" ] || invocation=${checked%%$'\n'*}
case $checked in
  *$'\n'*) message=${checked#*$'\n'} ;;
  *) message= ;;
esac
if [ -z "$message" ]; then
  echo "{{name}}: no prompt in the request" >&2
  printf 'Status: 400\nContent-Type: application/json\n' >>"$CLRK_METADATA_RESPONSE_HEADERS"
  error bad_input 'the body must be a JSON object with "prompt": a non-empty string'
  exit 0
fi
printf 'Content-Type: application/x-ndjson\n' >>"$CLRK_METADATA_RESPONSE_HEADERS"

# The one prompt, then the end of the CLI's input: it answers, then exits. tee passes each line
# on at once and keeps a copy in this invocation's own TMPDIR, to read the last line from.
echo "$message" >&"$to_claude" 2>/dev/null
exec {to_claude}>&-
events="${TMPDIR:-/tmp}/events.jsonl"
tee "$events" <&"$from_claude"
wait "$claude_pid"
status=$?
last=$(tail -n 1 "$events")
# The CLI reports API errors with subtype "success" and exit 1: read is_error too.
if [ "$status" -ne 0 ] || ! jq -e '.type == "result" and .is_error == false' >/dev/null 2>&1 <<<"$last"; then
  echo "{{name}}: claude exited with status $status: $last" >&2
  printf 'Status: 502\n' >>"$CLRK_METADATA_RESPONSE_HEADERS"
  reason=$(jq -r '.result // empty' <<<"$last" 2>/dev/null)
  error model_error "claude failed: ${reason:-no answer (exit status $status)}"
fi
exit 0
