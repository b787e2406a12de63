#!/usr/bin/env bash
# {{name}}: read the CloudEvents envelope on stdin, ask Claude for one jq filter that turns
# .data.input into what .data.want describes, run jq to verify it, print {"filter", "output"}.
# The shell is the source of truth, not the model: the output is what jq really produced.
#
# Errors are answered as JSON {"error": {"type", "message", "invocationId"}} with an HTTP status
# written to $CLRK_METADATA_RESPONSE_HEADERS (400: the caller's fault, 502: the model's), details
# on stderr (the invocation's logs, never the caller's).
#
# Warm start (`spec.warmStart: true`, docs/agents.md in clrk): the Claude CLI is started, and its
# lazy start-up done, before the request is read, while the sandbox waits for its request; the
# line written to $CLRK_READY_FD tells clrk it is done. Without warm start (the variable unset)
# the CLI starts the same way once the request is there. Either way, one CLI answers one request;
# the invocation id comes from the envelope (`clrkinvocationid`): an agent started ahead has no
# $CLRK_METADATA_INVOCATION_ID.
set -uo pipefail

invocation=${CLRK_METADATA_INVOCATION_ID:-}
fail() { # status type message
  echo "{{name}}: $3" >&2
  printf 'Status: %s\nContent-Type: application/json\n' "$1" >>"$CLRK_METADATA_RESPONSE_HEADERS"
  jq -cn --arg type "$2" --arg message "$3" --arg id "$invocation" \
    '{error: {type: $type, message: $message, invocationId: $id}}'
  exit 0
}

schema='{"type":"object","properties":{"filter":{"type":"string"}},"required":["filter"],"additionalProperties":false}'
system='You write jq filters. Given a JSON input and a description of the wanted output, answer with one jq filter that produces exactly that output from that input. Prefer simple, idiomatic filters.'

# Print mode, no tools, no session files, no CLAUDE.md from parent folders, structured output;
# messages in and events out as JSON lines (stream-json), so the CLI starts before its prompt
# exists. Its stderr is ours (the invocation's logs); it must not hold the readiness pipe. Bash
# drops a coprocess's pipes and pid once it has ended: it waits for a first line, written once
# the shell has moved them into variables of its own.
coproc CLAUDE {
  read -r _
  [ -z "${CLRK_READY_FD:-}" ] || exec {CLRK_READY_FD}>&-
  exec claude -p --bare --no-session-persistence --tools "" \
    --input-format stream-json --output-format stream-json --verbose \
    --model "${ANTHROPIC_MODEL:-claude-haiku-4-5}" --system-prompt "$system" --json-schema "$schema"
}
claude_pid=$CLAUDE_PID
exec {to_claude}>&"${CLAUDE[1]}"- {from_claude}<&"${CLAUDE[0]}"-
echo >&"$to_claude"
# A write to a CLI that died fails instead of killing the shell: its exit status is reported.
trap '' PIPE

died() { # when: the CLI closed its output; name its exit status
  wait "$claude_pid"
  fail 502 model_error "claude exited with status $? $1"
}

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

# The CLI's events, one a line, read by one jq started now (jq 1.6 takes ~20 ms to start: paid
# before the request, with warm start): at the first `result` event it writes "ok", then the
# filter as a JSON string, then the filter; or what went wrong; and exits. Nothing: the CLI
# ended (or wrote what is not JSON) before its result. The CLI reports API errors with subtype
# "success": read is_error. A model that never called the structured-output tool leaves
# structured_output null: that is a failure too.
exec {results}< <(exec {to_claude}>&-; exec jq -rn '
  first(inputs | select(.type == "result"))
  | if .is_error != false then "error: \(.result // "unknown")"
    elif (.structured_output.filter | type) != "string" then "none"
    else "ok", (.structured_output.filter | tojson), .structured_output.filter
    end' <&"$from_claude" 2>/dev/null)
exec {from_claude}<&-

# One jq reads the envelope from stdin, checks it and writes four lines: the invocation id, "ok"
# (or what is wrong), the input as compact JSON, and the user message for the CLI (compact JSON
# has no raw newline).
checked=$(jq -r '
  .data as $d
  | (.clrkinvocationid // "" | tostring),
    if ($d | type) != "object" then "the body must be a JSON object with \"input\" and \"want\""
    elif $d.input == null then "the body needs \"input\": the JSON to filter"
    elif ($d.want | type) != "string" or $d.want == "" then "the body needs \"want\": a string saying what to extract"
    else "ok", ($d.input | tojson),
      ({type: "user", message: {role: "user",
        content: "Input:\n\($d.input | tojson)\n\nWanted output: \($d.want)\n"}} | tojson)
    end' 2>/dev/null) || checked=$'\nthe body must be a JSON object with "input" and "want"'
[ -z "${checked%%$'\n'*}" ] || invocation=${checked%%$'\n'*}
checked=${checked#*$'\n'}
[ "${checked%%$'\n'*}" = ok ] || fail 400 bad_input "${checked%%$'\n'*}"
checked=${checked#*$'\n'}
input=${checked%%$'\n'*}
message=${checked#*$'\n'}

# The one prompt, then the end of the CLI's input: it answers, then exits.
echo "$message" >&"$to_claude" 2>/dev/null
exec {to_claude}>&-
IFS= read -r -d '' answer <&"$results"
answer=${answer%$'\n'}
case ${answer%%$'\n'*} in
  ok) ;;
  none) fail 502 model_error 'claude gave no filter (structured_output is null)' ;;
  error:*) fail 502 model_error "claude reported an error: ${answer#error: }" ;;
  *) died 'without a result' ;;
esac
answer=${answer#*$'\n'}
filter_json=${answer%%$'\n'*}
filter=${answer#*$'\n'}

# Scratch files go under $TMPDIR: private to this invocation and removed after it. (/tmp is
# shared by the invocations of a pod and cleaned of each one's files as it ends.)
errors="${TMPDIR:-/tmp}/jq.err"
if ! output=$(jq -c "$filter" <<<"$input" 2>"$errors"); then
  fail 502 filter_error "the filter $filter does not run: $(head -c 500 "$errors")"
fi
# One output is the answer; none or several, the array of them (each compact value is one line).
case $output in
  '') output='[]' ;;
  *$'\n'*) output="[${output//$'\n'/,}]" ;;
esac
printf '{"filter":%s,"output":%s}\n' "$filter_json" "$output"
