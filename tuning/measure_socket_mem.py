#!/usr/bin/env python3
"""Measure the kernel memory an idle established TCP socket costs on this box.

Opens PAIRS established loopback pairs (2 x PAIRS sockets), registers every
socket in one epoll set (as the gateway and the load generator do), and
diffs /proc/slabinfo, /proc/meminfo (Slab) and /proc/net/sockstat before and
after. Then it measures two more things the tuning guide needs:

  * queued: writes QUEUED bytes (one small PUSH frame) to one end of every
    pair without the peer reading it, and reports the TCP memory pages
    (sockstat "mem", the unit of net.ipv4.tcp_mem) charged per socket;
  * time-wait: closes the "server" ends first, so they end in TIME_WAIT, and
    reports the bytes per TIME_WAIT entry (tw_sock_TCP slab).

Bounded: PAIRS is capped by the open-file limit, every wait has a deadline,
and all sockets are closed on exit. Loopback only. Needs read access to
/proc/slabinfo (root) for the per-cache breakdown.

Usage: python3 tuning/measure_socket_mem.py [--pairs 8000] [--queued 64]
"""

import argparse
import resource
import select
import socket
import sys
import time

DEADLINE_S = 60.0
# Caches an established socket allocates from (struct sock, struct socket +
# inode, struct file, dentry, epoll item and wait entry, small kmallocs).
SOCKET_CACHES = (
    "TCP",
    "sock_inode_cache",
    "filp",
    "dentry",
    "eventpoll_epi",
    "eventpoll_pwq",
)


def slabinfo():
    """Return {cache: (active_objs, objsize)}; empty when not readable."""
    try:
        with open("/proc/slabinfo") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return {}
    out = {}
    for line in lines:
        parts = line.split()
        out[parts[0]] = (int(parts[1]), int(parts[3]))
    return out


def meminfo_kb(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def sockstat_tcp():
    """Return the TCP line of /proc/net/sockstat as a dict of ints."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()[1:]
                return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
    raise KeyError("TCP")


def snapshot():
    return {
        "slab": slabinfo(),
        "slab_kb": meminfo_kb("Slab"),
        "tcp": sockstat_tcp(),
    }


def slab_delta(before, after):
    """Per-cache (objects, bytes) growth, largest first."""
    rows = []
    for name, (objs, size) in after["slab"].items():
        prev = before["slab"].get(name, (0, size))[0]
        if objs != prev:
            rows.append((name, objs - prev, (objs - prev) * size))
    rows.sort(key=lambda r: -r[2])
    return rows


def report(title, before, after, sockets, top=8):
    rows = slab_delta(before, after)
    print(f"== {title}: {sockets} sockets")
    print(f"   {'cache':<20} {'objects':>9} {'bytes':>12} {'bytes/socket':>13}")
    for name, objs, nbytes in rows[:top]:
        print(f"   {name:<20} {objs:>9} {nbytes:>12} {nbytes / sockets:>13.0f}")
    named = sum(b for n, _, b in rows if n in SOCKET_CACHES)
    allrows = sum(b for _, _, b in rows)
    slab_kb = after["slab_kb"] - before["slab_kb"]
    tcp_pages = after["tcp"]["mem"] - before["tcp"]["mem"]
    print(f"   socket caches {SOCKET_CACHES}: {named / sockets:.0f} B/socket")
    print(f"   all slabinfo growth: {allrows / sockets:.0f} B/socket")
    print(f"   /proc/meminfo Slab growth: {slab_kb * 1024 / sockets:.0f} B/socket")
    print(
        f"   sockstat TCP mem growth: {tcp_pages} pages "
        f"({tcp_pages / sockets:.3f} pages/socket)"
    )
    return named / sockets, slab_kb * 1024 / sockets


def wait_readable(ep, want, deadline):
    """Wait (by epoll events, never by sleeping) until `want` fds are readable."""
    ready = set()
    while len(ready) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            sys.exit(f"timed out: {len(ready)}/{want} sockets readable")
        for fd, _ in ep.poll(left, 4096):
            ready.add(fd)
    return ready


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=8000)
    ap.add_argument("--queued", type=int, default=64, help="bytes queued per socket")
    args = ap.parse_args()

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    pairs = min(args.pairs, (soft - 64) // 2)
    if pairs < 100:
        sys.exit(f"open-file limit {soft} too low for a useful measurement")
    deadline = time.monotonic() + DEADLINE_S

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    addr = listener.getsockname()
    ep = select.epoll()
    clients, servers = [], []
    try:
        base = snapshot()
        while len(servers) < pairs:
            if time.monotonic() > deadline:
                sys.exit("timed out while connecting")
            # Connect in batches no larger than the listen backlog.
            batch = min(1024, pairs - len(servers))
            for _ in range(batch):
                c = socket.create_connection(addr)
                clients.append(c)
            for _ in range(batch):
                s, _ = listener.accept()
                servers.append(s)
        for s in clients + servers:
            s.setblocking(False)
            ep.register(s.fileno(), select.EPOLLIN)
        idle = snapshot()
        n = 2 * pairs
        print(f"kernel {open('/proc/sys/kernel/osrelease').read().strip()}, "
              f"{pairs} established loopback pairs, all in one epoll set")
        report("idle established", base, idle, n)

        payload = b"\0" * args.queued
        for c in clients:
            c.send(payload)
        wait_readable(ep, pairs, deadline)
        queued = snapshot()
        report(f"{args.queued} B queued unread per pair", idle, queued, pairs)

        for s in servers:
            s.recv(65536)  # unread data would turn the close into a RST
            ep.unregister(s.fileno())
            s.close()
        servers.clear()
        for c in clients:
            ep.unregister(c.fileno())
            c.close()
        clients.clear()
        closed = snapshot()
        tw = closed["tcp"]["tw"] - base["tcp"]["tw"]
        rows = {n: b for n, _, b in slab_delta(base, closed)}
        tw_bytes = rows.get("tw_sock_TCP", 0)
        if tw > 0:
            print(f"== time-wait: {tw} TIME_WAIT entries, tw_sock_TCP "
                  f"{tw_bytes} bytes ({tw_bytes / tw:.0f} B/entry)")
    finally:
        for s in clients + servers:
            s.close()
        ep.close()
        listener.close()


if __name__ == "__main__":
    main()
