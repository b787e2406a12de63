#!/usr/bin/env bash
# {{name}}: read the CloudEvents envelope on stdin, ask Claude for one jq filter that turns
# .data.input into what .data.want describes, run jq to verify it, print {"filter", "output"}.
# The shell is the source of truth, not the model: the output is what jq really produced.
#
# Errors are answered as JSON {"error": {"type", "message"}} with an HTTP status written to
# $CLRK_METADATA_RESPONSE_HEADERS (400: the caller's fault, 502: the model's), details on stderr
# (the invocation's logs, never the caller's).
set -uo pipefail

fail() { # status type message
  echo "{{name}}: $3" >&2
  printf 'Status: %s\nContent-Type: application/json\n' "$1" >>"$CLRK_METADATA_RESPONSE_HEADERS"
  jq -cn --arg type "$2" --arg message "$3" --arg id "${CLRK_METADATA_INVOCATION_ID:-}" \
    '{error: {type: $type, message: $message, invocationId: $id}}'
  exit 0
}

event=$(cat)
jq -e '.data | type == "object"' >/dev/null 2>&1 <<<"$event" \
  || fail 400 bad_input 'the body must be a JSON object with "input" and "want"'
input=$(jq -c '.data.input' <<<"$event")
want=$(jq -r '.data.want // empty | strings' <<<"$event")
[ "$input" != null ] || fail 400 bad_input 'the body needs "input": the JSON to filter'
[ -n "$want" ] || fail 400 bad_input 'the body needs "want": a string saying what to extract'

schema='{"type":"object","properties":{"filter":{"type":"string"}},"required":["filter"],"additionalProperties":false}'
system='You write jq filters. Given a JSON input and a description of the wanted output, answer with one jq filter that produces exactly that output from that input. Prefer simple, idiomatic filters.'
prompt=$(printf 'Input:\n%s\n\nWanted output: %s\n' "$input" "$want")

# Print mode, no tools, no session files, no CLAUDE.md from parent folders, structured output.
# The prompt goes on stdin: a prompt starting with "-" would be read as a flag.
answer=$(claude -p --bare --no-session-persistence --tools "" --output-format json \
  --model "${ANTHROPIC_MODEL:-claude-haiku-4-5}" --system-prompt "$system" \
  --json-schema "$schema" <<<"$prompt")
status=$?
[ "$status" -eq 0 ] || fail 502 model_error "claude exited with status $status: $(jq -r '.result? // empty' <<<"$answer" 2>/dev/null)"
# The CLI reports API errors with subtype "success": read is_error. A model that never called the
# structured-output tool leaves structured_output null with exit 0: that is a failure too.
jq -e '.is_error == false' >/dev/null 2>&1 <<<"$answer" \
  || fail 502 model_error "claude reported an error: $(jq -r '.result // "unknown"' <<<"$answer" 2>/dev/null)"
filter=$(jq -er '.structured_output.filter | strings' <<<"$answer") \
  || fail 502 model_error 'claude gave no filter (structured_output is null)'

errors="${TMPDIR:-/tmp}/jq.err"
if ! output=$(jq -c "$filter" <<<"$input" 2>"$errors" | jq -cs 'if length == 1 then .[0] else . end'); then
  fail 502 filter_error "the filter $filter does not run: $(head -c 500 "$errors")"
fi
jq -cn --arg filter "$filter" --argjson output "$output" '{filter: $filter, output: $output}'
