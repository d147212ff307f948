"""Health check node ports: what kube-proxy answers, and a real server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from localcluster.procs import free_port
from node.healthcheck import Check, _Server, local_ready_endpoints, response, wanted_check


def svc(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "web"}, "spec": spec}


def test_only_etp_local_services_with_a_port_are_checked() -> None:
    assert wanted_check(svc(type="LoadBalancer", externalTrafficPolicy="Local",
                            healthCheckNodePort=31000)) == Check("ns", "web", 31000)
    assert wanted_check(svc(type="LoadBalancer", externalTrafficPolicy="Cluster")) is None
    assert wanted_check(svc(type="NodePort", externalTrafficPolicy="Local")) is None


def test_local_ready_endpoints_count_this_nodes_ready_ones() -> None:
    sl = {"endpoints": [
        {"addresses": ["10.244.1.5"], "nodeName": "n1", "conditions": {"ready": True}},
        {"addresses": ["10.244.1.6"], "nodeName": "n1", "conditions": {}},
        {"addresses": ["10.244.1.7"], "nodeName": "n1",
         "conditions": {"ready": False, "serving": True, "terminating": True}},
        {"addresses": ["10.244.2.5"], "nodeName": "n2", "conditions": {"ready": True}}]}
    assert local_ready_endpoints([sl, sl], "n1") == 2  # the same slice twice counts once
    assert local_ready_endpoints([sl], "n3") == 0


def test_response_is_kube_proxys() -> None:
    status, headers, body = response(Check("ns", "web", 1), 0)
    assert status == 503 and headers["X-Load-Balancing-Endpoint-Weight"] == "0"
    assert body.decode() == ('{\n\t"service": {\n\t\t"namespace": "ns",\n\t\t"name": "web"\n'
                             '\t},\n\t"localEndpoints": 0,\n\t"serviceProxyHealthy": true\n}')
    assert response(Check("ns", "web", 1), 3)[0] == 200


def test_server_answers_any_path_and_follows_the_count() -> None:
    port = free_port()
    s = _Server(Check("ns", "web", port), 1)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            assert json.loads(r.read())["localEndpoints"] == 1
        s.count = 0
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
            raise AssertionError("503 expected")
        except urllib.error.HTTPError as e:
            assert e.code == 503 and json.loads(e.read())["localEndpoints"] == 0
    finally:
        s.close()
