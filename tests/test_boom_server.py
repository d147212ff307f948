"""The boom-server image (kubernetes#74839): it injects an out-of-window
segment after each handshake, as upstream's does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from localcluster.boom_server import checksum, parse, segment

REPO = Path(__file__).resolve().parent.parent


def test_segment_checksum_verifies_and_parses_back() -> None:
    seg = segment(9000, 40000, 5, 7, 8 | 16, 512, "10.0.0.1", "10.0.0.2", b"boom!!!")
    assert checksum("10.0.0.1", "10.0.0.2", seg) == 0  # a correct checksum sums to zero
    ip_header = bytes([0x45]) + bytes(11) + bytes([10, 0, 0, 1]) + bytes([10, 0, 0, 2])
    addr, t = parse(ip_header + seg) or ("", {})
    assert addr == "10.0.0.1"
    assert (t["sport"], t["dport"], t["seq"], t["ack"], t["flags"]) == (9000, 40000, 5, 7, 24)


def test_server_injects_after_the_handshake() -> None:
    # In a network namespace of its own: loopback only, nothing leaves.
    script = f"""
ip link set lo up
POD_IP=127.0.0.1 PYTHONPATH={REPO} {sys.executable} -m localcluster.boom_server &
srv=$!
sleep 1.5
{sys.executable} -c 'import socket, time
s = socket.create_connection(("127.0.0.1", 9000)); time.sleep(1)'
sleep 0.5
kill $srv
"""
    out = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True,
                         text=True, timeout=30).stdout
    assert "listen on 0.0.0.0:9000" in out, out
    assert "connection established" in out and "boom packet injected" in out, out
