#!/bin/bash
# Starts the static backend (nginx, fixed body) and then the proxy under test, as
# two children of this script, so that the harness's one server process per trial
# is both. Usage:
#
#   run_proxy.sh WORKDIR BACKEND_PORT BACKEND_WORKERS BODY_BYTES PROXY_COMMAND...
#
# The backend listens on 127.0.0.1:BACKEND_PORT with BACKEND_WORKERS workers and
# answers every request with 200 and BODY_BYTES bytes. The proxy starts only once
# the backend listens, so the harness (which waits for the proxy's port) never
# sends load to a proxy without a backend.
#
# Nothing leaves the process group: both nginx processes run with `daemon off`
# (a daemon would setsid away). SIGTERM to the group reaches every process; the
# trap forwards it to both children too, for a SIGTERM sent to this script alone.
# If either child exits on its own, the other is stopped and this script exits 1,
# so the harness sees a dead server instead of measuring 502s.
set -u

if [ $# -lt 5 ]; then
    echo "usage: $0 WORKDIR BACKEND_PORT BACKEND_WORKERS BODY_BYTES PROXY_COMMAND..." >&2
    exit 2
fi
workdir=$1 backend_port=$2 backend_workers=$3 body_bytes=$4
shift 4

prefix="$workdir/backend-$backend_port"
mkdir -p "$prefix" || exit 1
body=$(head -c "$body_bytes" /dev/zero | tr '\0' x)
cat >"$prefix/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $backend_workers;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    # Persistent upstream connections must stay persistent for the whole run.
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path $prefix/body;
    proxy_temp_path $prefix/proxy;
    fastcgi_temp_path $prefix/fastcgi;
    uwsgi_temp_path $prefix/uwsgi;
    scgi_temp_path $prefix/scgi;
    default_type text/plain;
    server {
        listen 127.0.0.1:$backend_port reuseport backlog=4096;
        location / { return 200 "$body"; }
    }
}
EOF

backend= proxy=
stop_children() {
    trap '' TERM INT
    for pid in $backend $proxy; do kill -TERM "$pid" 2>/dev/null; done
}
trap 'stop_children; wait; exit 0' TERM INT

nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" &
backend=$!

listening() { [ -n "$(ss -Hltn "sport = :$backend_port")" ]; }
for _ in $(seq 200); do  # at most 10 s
    listening && break
    kill -0 "$backend" 2>/dev/null || break
    sleep 0.05
done
if ! listening; then
    echo "run_proxy.sh: backend nginx did not listen on 127.0.0.1:$backend_port:" >&2
    tail -n 5 "$prefix/error.log" >&2 2>/dev/null
    stop_children
    wait
    exit 1
fi

"$@" &
proxy=$!

# `wait -n` returns when either child ends (or when a trapped signal arrives,
# whose trap exits). A child that ends by itself is an error.
wait -n
status=$?
echo "run_proxy.sh: a child exited on its own (status $status); stopping the other" >&2
stop_children
wait
exit 1
