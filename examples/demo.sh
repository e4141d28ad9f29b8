#!/bin/sh
# make demo: starts the echo server on a free port, runs the 4D-style client
# against it, stops the server. Exits with the client's status.
set -u
log=$(mktemp)
lua5.4 examples/echo_server.lua 0 >"$log" 2>&1 &
server=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's/^echo server listening on .*:\([0-9]*\)$/\1/p' "$log")
  [ -n "$port" ] && break
  sleep 0.05
done
if [ -z "$port" ]; then echo "the echo server did not start:"; cat "$log"; kill "$server"; exit 1; fi
echo "== server: $(head -1 "$log")"
echo "== client:"
lua5.4 examples/client.lua 127.0.0.1 "$port"
status=$?
sleep 0.1
kill "$server" 2>/dev/null
wait "$server" 2>/dev/null
echo "== server log:"
tail -n +2 "$log"
rm -f "$log"
exit $status
