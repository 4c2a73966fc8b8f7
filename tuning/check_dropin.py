#!/usr/bin/env python3
"""Compare a sysctl drop-in with the live values before applying it.

For every `key = value` line prints the current value and whether the file
would raise, keep, lower or fail to find it. Exits 1 if any key would be
lowered or does not exist here, so `check_dropin.py F && sysctl -p F` never
lowers a setting. Vectors (tcp_mem, port ranges) compare element-wise; a
range's first port lowered counts as widening, not lowering, and is shown
as "widen". Read-only.

Usage: python3 tuning/check_dropin.py tuning/sysctl.d/60-millgate.conf
"""

import sys


def verdict(key, cur, new):
    if key.endswith("ip_local_port_range"):
        if new[0] <= cur[0] and new[1] >= cur[1]:
            return "widen" if new != cur else "keep"
        return "lower"
    if key.endswith("reserved_ports") or key.endswith("tw_reuse"):
        return "set"
    if len(cur) != len(new):
        return "lower"
    if all(n == c for n, c in zip(new, cur)):
        return "keep"
    if all(n >= c for n, c in zip(new, cur)):
        return "raise"
    return "lower"


def main(path):
    bad = 0
    with open(path) as f:
        lines = [l.strip() for l in f]
    for line in lines:
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = (p.strip() for p in line.partition("="))
        key = key.lstrip("-")
        proc = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(proc) as f:
                current = f.read().split()
        except OSError as e:
            print(f"{key:<40} missing here ({e.strerror})")
            bad += 1
            continue
        new = value.split()
        try:
            v = verdict(key, [int(x) for x in current], [int(x) for x in new])
        except ValueError:
            v = "set"
        print(f"{key:<40} {' '.join(current):>24} -> {value:<24} {v}")
        bad += v in ("lower",)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
