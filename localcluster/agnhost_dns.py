"""agnhost's dns-suffix, dns-server-list and etc-hosts: what the pod's
resolv.conf and hosts file say, printed as the e2e image prints them (the DNS
conformance tests exec them). Like upstream, only the first `search` and the
first `nameserver` line count."""

from __future__ import annotations

import argparse
import sys

RESOLV_CONF = "/etc/resolv.conf"
HOSTS = "/etc/hosts"


def _first(keyword: str) -> list[str] | None:
    with open(RESOLV_CONF) as f:
        for line in f.read().split("\n"):
            if line.startswith(keyword):
                return line.split(" ")[1:]
    return None


def _print_list(keyword: str, what: str) -> int:
    found = _first(keyword)
    if found is None:
        print(f"Could not find {what} in {RESOLV_CONF}!", file=sys.stderr)
        return 2
    print(",".join(found))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("dns-suffix", help="print the DNS search list")
    s.set_defaults(func=lambda a: _print_list("search", "a DNS search list"))
    n = sub.add_parser("dns-server-list", help="print the DNS servers")
    n.set_defaults(func=lambda a: _print_list("nameserver", "a DNS server"))
    h = sub.add_parser("etc-hosts", help="print /etc/hosts")
    h.set_defaults(func=_print_hosts)


def _print_hosts(a: argparse.Namespace) -> int:
    with open(HOSTS) as f:
        print(f.read())
    return 0
