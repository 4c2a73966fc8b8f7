#!/bin/sh
# Reproduces two "too low" symptoms from tuning/README.md inside a throwaway
# network namespace (root; changes nothing outside it; loopback only):
#   1.4  somaxconn = 16: a listener asking for 1000 gets a backlog of 16, and
#        64 connects overflow it (TcpExtListenOverflows).
#   1.10 tcp_max_tw_buckets = 10: 200 server-first closes keep 10 TIME_WAIT
#        entries; the rest are counted in TcpExtTCPTimeWaitOverflow.
# Usage: sudo sh tuning/symptoms.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec unshare -n sh -eu -c '
ip link set lo up
sysctl -qw net.core.somaxconn=16 net.ipv4.tcp_max_tw_buckets=10
python3 - <<PY
import socket, subprocess
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1000)
port = s.getsockname()[1]
cs = []
for _ in range(64):
    c = socket.socket(); c.setblocking(False)
    try:
        c.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    cs.append(c)
print(subprocess.run(["ss", "-lnt", f"sport = :{port}"], capture_output=True, text=True).stdout.strip())
for c in cs:
    c.close()
s.close()
PY
nstat -az TcpExtListenOverflows TcpExtListenDrops | tail -n 2
sysctl -qw net.core.somaxconn=4096
python3 '"$here"'/measure_socket_mem.py --pairs 200 | tail -n 1
nstat -az TcpExtTCPTimeWaitOverflow | tail -n 1
'
