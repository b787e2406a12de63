#!/usr/bin/env bash
# jq-bot: read the CloudEvents envelope on stdin, ask Claude for one jq filter that turns
# .data.input into what .data.want describes, run jq to verify it, print {"filter", "output"}.
# The shell is the source of truth, not the model: the output is what jq really produced.
# On failure it prints a JSON error on stdout, details on stderr (the invocation's logs), and
# exits non-zero.
set -uo pipefail

fail() { # type message
  echo "jq-bot: $2" >&2
  jq -cn --arg type "$1" --arg message "$2" '{error: {type: $type, message: $message}}'
  exit 1
}

event=$(cat)
jq -e '.data | type == "object"' >/dev/null 2>&1 <<<"$event" \
  || fail bad_input 'the body must be a JSON object with "input" and "want"'
input=$(jq -c '.data.input' <<<"$event")
want=$(jq -r '.data.want // empty | strings' <<<"$event")
[ "$input" != null ] || fail bad_input 'the body needs "input": the JSON to filter'
[ -n "$want" ] || fail bad_input 'the body needs "want": a string saying what to extract'

schema='{"type":"object","properties":{"filter":{"type":"string"}},"required":["filter"],"additionalProperties":false}'
system='You write jq filters. Given a JSON input and a description of the wanted output, answer with one jq filter that produces exactly that output from that input. Prefer simple, idiomatic filters.'
prompt=$(printf 'Input:\n%s\n\nWanted output: %s\n' "$input" "$want")

# Print mode, no tools, no session files, no CLAUDE.md from parent folders, structured output.
answer=$(claude -p --bare --no-session-persistence --tools "" --output-format json \
  --model "${JQ_BOT_MODEL:-claude-haiku-4-5}" --system-prompt "$system" \
  --json-schema "$schema" <<<"$prompt")
status=$?
[ "$status" -eq 0 ] || fail model_error "claude exited with status $status: $(jq -r '.result? // empty' <<<"$answer" 2>/dev/null)"
# The CLI reports API errors with subtype "success": read is_error. A model that never called the
# structured-output tool leaves structured_output null with exit 0: that is a failure too.
jq -e '.is_error == false' >/dev/null <<<"$answer" \
  || fail model_error "claude reported an error: $(jq -r '.result // "unknown"' <<<"$answer")"
filter=$(jq -er '.structured_output.filter | strings' <<<"$answer") \
  || fail model_error 'claude gave no filter (structured_output is null)'

# Scratch files go under $TMPDIR: private to this invocation and removed after it. (/tmp is
# shared by the invocations of a pod and cleaned of each one's files as it ends.)
errors="${TMPDIR:-/tmp}/jq-bot.err"
if ! output=$(jq -c "$filter" <<<"$input" 2>"$errors" | jq -cs 'if length == 1 then .[0] else . end'); then
  fail filter_error "the filter $filter does not run: $(head -c 500 "$errors")"
fi
jq -cn --arg filter "$filter" --argjson output "$output" '{filter: $filter, output: $output}'
