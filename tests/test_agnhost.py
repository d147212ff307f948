"""Our agnhost: netexec's endpoints and UDP answers (in-process, on loopback ports)
and the command line (processes: pause, netexec, connect, signals)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.agnhost_netexec import Netexec, parse_duration, udp_answer
from localcluster.procs import free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Netexec]:
    monkeypatch.setattr("socket.gethostname", lambda: "pod-a")
    s = Netexec(http_port=0, udp_port=0, bind_host="127.0.0.1").start()
    try:
        yield s
    finally:
        s.stop()


def get(s: Netexec, path: str) -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def udp(port: int, msg: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(msg.encode(), ("127.0.0.1", port))
        return s.recv(2048).decode()


def test_hostname_echo_clientip_root(server: Netexec) -> None:
    assert get(server, "/hostname") == (200, "pod-a")
    assert get(server, "/hostName") == (200, "pod-a")
    assert get(server, "/echo?msg=hello%20there") == (200, "hello there")
    assert get(server, "/echo?msg=teapot&code=418") == (418, "teapot")
    code, body = get(server, "/clientip")
    host, port = body.rsplit(":", 1)
    assert code == 200 and host == "127.0.0.1" and port.isdigit()


def test_bad_query_arguments_answer_200_with_upstreams_message(server: Netexec) -> None:
    assert get(server, "/echo?msg=x&code=abc") == (
        200, "argument 'code' must be an integer or empty, got 'abc'\n")
    assert get(server, "/redirect?location=/&code=3o2") == (
        200, "argument 'code' must be an integer or empty, got '3o2'\n")
    assert get(server, "/exit?timeout=5x") == (
        200, "argument 'timeout' must be a valid golang duration or empty, got '5x'\n")
    assert get(server, "/exit?wait=soon") == (
        200, "argument 'wait' must be a valid golang duration or empty, got 'soon'\n")
    assert get(server, "/exit?code=seven") == (
        200, "argument 'code' must be an integer [0-127] or empty, got 'seven'\n")
    # None of them exited: the server still answers.
    assert get(server, "/hostname") == (200, "pod-a")
    code, body = get(server, "/")
    assert code == 200 and body.startswith("NOW: ")
    assert get(server, "/no/such/path")[1].startswith("NOW: ")  # like Go's "/" pattern


def test_health_and_readiness(server: Netexec) -> None:
    assert get(server, "/healthz")[0] == 200
    assert get(server, "/readyz") == (200, "ok")
    server.state.sigterm.set()
    assert get(server, "/readyz") == (503, "shutting down")


def test_healthz_needs_the_udp_server() -> None:
    s = Netexec(http_port=0, udp_port=-1, bind_host="127.0.0.1").start()
    try:
        assert get(s, "/healthz")[0] == 412  # as upstream: ready means the UDP server runs
    finally:
        s.stop()


def test_shell(server: Netexec) -> None:
    code, body = get(server, "/shell?cmd=echo%20hi")
    assert code == 200 and json.loads(body) == {"output": "hi\n"}
    code, body = get(server, "/shell?shellCommand=echo%20oops;exit%203")
    assert json.loads(body) == {"output": "oops\n", "error": "exit status 3"}


def test_dial_http_and_udp(server: Netexec) -> None:
    other = Netexec(http_port=0, udp_port=0, bind_host="127.0.0.1").start()
    try:
        for proto, port in (("http", other.http_port), ("udp", other.udp_port)):
            code, body = get(server, f"/dial?request=hostname&protocol={proto}&host=127.0.0.1"
                                     f"&port={port}&tries=3")
            assert code == 200 and json.loads(body) == {"responses": ["pod-a"] * 3}
        code, body = get(server, f"/dial?request=echo?msg=x&host=127.0.0.1"
                                 f"&port={other.http_port}")
        assert json.loads(body) == {"responses": ["x"]}
        code, body = get(server, "/dial?request=clientip&protocol=udp&host=127.0.0.1"
                                 f"&port={other.udp_port}")
        assert json.loads(body)["responses"][0].startswith("127.0.0.1:")
    finally:
        other.stop()


def test_dial_errors(server: Netexec) -> None:
    closed = free_port()
    code, body = get(server, f"/dial?request=hostname&host=127.0.0.1&port={closed}&tries=2")
    out = json.loads(body)
    assert code == 200 and "responses" not in out and len(out["errors"]) == 2
    assert "connection refused" in out["errors"][0]
    assert get(server, "/dial?host=127.0.0.1&port=80")[0] == 400  # no request
    assert get(server, "/dial?request=x&host=127.0.0.1&port=80&tries=many")[0] == 400
    assert get(server, "/dial?request=x&protocol=icmp&host=127.0.0.1&port=80")[0] == 400


def test_udp_commands(server: Netexec) -> None:
    assert udp(server.udp_port, "hostname") == "pod-a"
    assert udp(server.udp_port, "echo Hello") == "hello"  # upstream lower-cases
    assert udp(server.udp_port, "clientip").startswith("127.0.0.1:")
    assert udp_answer("nonsense", ("127.0.0.1", 1)) is None


def test_header_and_redirect(server: Netexec) -> None:
    c = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    c.request("GET", "/header?key=X-Test", headers={"X-Test": "42"})
    assert c.getresponse().read() == b"42"
    c.request("GET", "/redirect?location=/echo%3Fmsg%3Dx&code=307")
    r = c.getresponse()
    r.read()
    assert r.status == 307 and r.getheader("Location") == "/echo?msg=x"
    c.close()


def test_parse_duration() -> None:
    assert parse_duration("1s") == 1.0
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration("0") == 0.0
    with pytest.raises(ValueError):
        parse_duration("5 seconds")


# --- the command line ------------------------------------------------------------

def agnhost(*args: str, netns: str | None = None) -> subprocess.Popen[str]:
    # In a UTS namespace of its own named like a pod, as a container runs.
    argv = ["unshare", "--uts", "sh", "-c", 'hostname cli-pod && exec "$@"', "sh",
            sys.executable, "-m", "localcluster.agnhost", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _stop(p: subprocess.Popen[str]) -> None:
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=10)


def wait_http(port: int, path: str = "/hostname", timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            return c.getresponse().read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_pause_exits_2_on_sigterm() -> None:
    p = agnhost("pause")
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "Paused"
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 2
        assert "exiting 2" in p.stdout.read()
    finally:
        _stop(p)


def test_no_args_is_pause_and_unknown_subcommand_fails() -> None:
    p = agnhost()
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "Paused"
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 1
    finally:
        _stop(p)
    q = agnhost("fake-gpu-server")
    out, _ = q.communicate(timeout=30)
    assert q.returncode == 1 and "not implemented" in out


def test_netexec_process_serves_and_stops_on_sigterm() -> None:
    http_port, udp_port = free_port(), free_port()
    p = agnhost("netexec", f"--http-port={http_port}", "--udp-port", str(udp_port))
    try:
        assert wait_http(http_port) == "cli-pod"
        assert udp(udp_port, "hostname") == "cli-pod"
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        _stop(p)


def test_netexec_exit_endpoint() -> None:
    port = free_port()
    p = agnhost("netexec", f"--http-port={port}", "--udp-port=-1")
    try:
        wait_http(port)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        with pytest.raises((http.client.HTTPException, OSError)):
            c.request("GET", "/exit?code=7")
            c.getresponse().read()
        assert p.wait(30) == 7
    finally:
        _stop(p)


def test_connect() -> None:
    port = free_port()
    q = agnhost("connect", f"127.0.0.1:{port}", "--timeout=2s")
    out, _ = q.communicate(timeout=30)
    assert q.returncode == 1 and out.strip() == "REFUSED"
    srv = Netexec(http_port=0, udp_port=-1, bind_host="127.0.0.1").start()
    try:
        q = agnhost("connect", f"127.0.0.1:{srv.http_port}", "--timeout=2s")
        assert q.wait(30) == 0
    finally:
        srv.stop()
        _stop(q)


def test_porter_answers_each_port_its_text_over_http_and_tls(tmp_path: Path) -> None:
    plain, tls = free_port(), free_port()
    env = {**os.environ, f"SERVE_PORT_{plain}": "foo", f"SERVE_TLS_PORT_{tls}": "tls bar",
           "HOME": str(tmp_path)}  # the self-signed pair goes under $HOME/.cache
    p = subprocess.Popen([sys.executable, "-m", "localcluster.agnhost", "porter"], env=env,
                         cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert {p.stdout.readline().strip(), p.stdout.readline().strip()} == {
            f"porter: serving on {plain}", f"porter: serving TLS on {tls}"}
        c = http.client.HTTPConnection("127.0.0.1", plain, timeout=10)
        c.request("GET", "/anything")
        assert c.getresponse().read() == b"foo"
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        t = http.client.HTTPSConnection("127.0.0.1", tls, timeout=10, context=ctx)
        t.request("POST", "/", body=b"x")
        assert t.getresponse().read() == b"tls bar"
    finally:
        p.terminate()
        assert p.wait(10) == 0
        if p.stdout:
            p.stdout.close()


def test_porter_json_response_names_the_method() -> None:
    port = free_port()
    env = {**os.environ, f"SERVE_PORT_{port}": "foo"}
    p = subprocess.Popen([sys.executable, "-m", "localcluster.agnhost", "porter",
                          "--json-response"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout is not None and "serving on" in p.stdout.readline()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("DELETE", "/x")
        r = c.getresponse()
        assert r.getheader("Content-Type") == "application/json"
        assert json.loads(r.read()) == {"Method": "DELETE", "Body": "foo"}
    finally:
        p.terminate()
        p.wait(10)
        if p.stdout:
            p.stdout.close()


def test_dns_subcommands_print_resolv_conf_as_upstream() -> None:
    def run(cmd: str) -> str:
        return subprocess.run([sys.executable, "-m", "localcluster.agnhost", cmd], cwd=REPO,
                              capture_output=True, text=True, timeout=30, check=True).stdout
    resolv = Path("/etc/resolv.conf").read_text().split("\n")
    first_ns = next(line for line in resolv if line.startswith("nameserver"))
    assert run("dns-server-list") == ",".join(first_ns.split(" ")[1:]) + "\n"
    assert run("etc-hosts") == Path("/etc/hosts").read_text() + "\n"


def test_porter_sniffs_the_content_type_as_go_does() -> None:
    from localcluster.agnhost_servers import sniff
    assert sniff('<a href="/rewriteme">test</a>') == "text/html; charset=utf-8"
    assert sniff("  <!-- x -->") == "text/html; charset=utf-8"
    assert sniff("<abbr>") == "text/plain; charset=utf-8"
    assert sniff("foo") == "text/plain; charset=utf-8"
