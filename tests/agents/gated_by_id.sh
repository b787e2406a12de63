#!/bin/sh
# Prints "first", waits until the file $1/<the envelope's id> exists (the test makes it once it
# saw the run under way: one gate per invocation, whichever process runs it), then prints "second"
# and, without a final newline, "last".
event=$(cat)
id=$(printf %s "$event" | sed -n 's/.*"id" *: *"\([^"]*\)".*/\1/p')
echo first
while [ ! -e "$1/$id" ]; do
  sleep 0.05
done
echo second
printf last
