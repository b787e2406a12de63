#!/bin/sh
# Declares its response's type and status CGI-style, then answers with CSV.
cat >/dev/null
printf 'Content-Type: text/csv\nStatus: 201\n' > "$CLRK_METADATA_RESPONSE_HEADERS"
printf 'a,b\n1,2\n'
