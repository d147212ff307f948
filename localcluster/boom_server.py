"""The e2e image regression-issue-74839 ("boom-server"), for pods the local
cluster runs as processes.

Upstream's test of the invalid-conntrack-state bug (kubernetes#74839): the
server accepts TCP on port 9000 and, on a raw socket per pod IP, watches each
handshake; right after the client's ACK it injects a segment with a sequence
number 100000 behind the window ("boom!!!"). Conntrack marks it INVALID; a
proxy that lets it through un-NATed makes the client answer with a RST, which
the server logs as "ERROR: RST received". Same port, timings and log lines
as upstream's Go program.

    python -m localcluster.boom_server     (POD_IP or POD_IPS from the environment)
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
import sys
import threading
import time

PORT = 9000
FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16
log = logging.getLogger("boom-server")


def checksum(src: str, dst: str, segment: bytes) -> int:
    """The TCP checksum over the IPv4 pseudo-header and `segment`."""
    data = (socket.inet_aton(src) + socket.inet_aton(dst) +
            struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(segment)) + segment)
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def segment(sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
            src: str, dst: str, data: bytes) -> bytes:
    head = struct.pack("!HHIIHHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                       (5 << 12) | flags, window, 0, 0)
    c = checksum(src, dst, head + data)
    return head[:16] + struct.pack("!H", c) + head[18:] + data


def parse(packet: bytes) -> tuple[str, dict[str, int]] | None:
    """(source address, TCP header fields) of a raw IPv4 packet."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    tcp = packet[ihl:ihl + 20]
    if len(tcp) < 20:
        return None
    sport, dport, seq, ack, flags, window = struct.unpack("!HHIIHH", tcp[:16])
    return socket.inet_ntoa(packet[12:16]), {
        "sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": flags & 0x1FF,
        "window": window}


def probe(ip: str) -> None:
    log.info("probing %s", ip)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    raw.bind((ip, 0))
    pending: dict[str, int] = {}
    while True:
        packet, _ = raw.recvfrom(4096)
        got = parse(packet)
        if got is None:
            continue
        addr, t = got
        if t["dport"] != PORT:
            continue
        key = f"{addr}:{t['sport']}"
        if t["flags"] & SYN:
            pending[key] = t["seq"] + 1
            continue
        if t["flags"] & RST:
            log.info("ERROR: RST received")
        if t["flags"] & ACK and key in pending:
            log.info("connection established")
            seq = pending.pop(key)
            bad = segment(PORT, t["sport"], t["ack"] - 100000, seq, PSH | ACK, t["window"],
                          ip, addr, b"boom!!!")
            try:
                raw.sendto(bad, (addr, 0))
                log.info("boom packet injected")
            except OSError as e:
                log.info("conn.WriteTo() error: %s", e)


def pod_ips() -> list[str]:
    raw = os.environ.get("POD_IPS") or os.environ.get("POD_IP") or ""
    return [ip for ip in raw.split(",") if ip and ipaddress.ip_address(ip).version == 4]


def main() -> int:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%Y/%m/%d %H:%M:%S")
    ips = pod_ips()
    if not ips:
        print("No valid IP found", file=sys.stderr)
        return 2
    for ip in ips:
        log.info("external ip: %s", ip)
        threading.Thread(target=probe, args=(ip,), daemon=True).start()
    log.info("listen on 0.0.0.0:%d", PORT)
    server = socket.create_server(("0.0.0.0", PORT), reuse_port=False)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_close_later, args=(conn,), daemon=True).start()


def _close_later(conn: socket.socket) -> None:
    time.sleep(10)
    conn.close()


if __name__ == "__main__":
    sys.exit(main())
