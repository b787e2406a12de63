#!/bin/sh
# Says on stderr that it ran, then answers with the invocation id its environment names and the
# envelope it was given.
envelope=$(cat)
echo "ran as $CLRK_METADATA_INVOCATION_ID" >&2
printf '{"env": "%s", "envelope": %s}\n' "$CLRK_METADATA_INVOCATION_ID" "$envelope"
