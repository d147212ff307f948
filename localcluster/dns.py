"""Cluster DNS for ovnkube-local: CoreDNS as a kube-system Deployment behind
the `kube-dns` Service, as kubeadm (and so kind) installs it. The kubelets
point pods at it (clusterDNS); the image runs the CoreDNS that
hack/build-kube.sh built (image map).

Only cluster names are answered: there is no `forward` to an upstream
resolver, because nothing here may send traffic to addresses outside the
cluster's namespaces. Other names get REFUSED, quickly.
"""

from __future__ import annotations

import json
from typing import Any

DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
IMAGE = "registry.k8s.io/coredns/coredns:v1.12.1"

COREFILE = f"""\
.:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    prometheus :9153
    cache 30
    reload
    loadbalance
}}
"""


def manifests() -> list[dict[str, Any]]:
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": "coredns", "namespace": "kube-system"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [
             {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns",
                       "namespace": "kube-system"}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"Corefile": COREFILE}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {**meta, "labels": labels},
         "spec": {
             "replicas": 1, "selector": {"matchLabels": labels},
             "template": {"metadata": {"labels": labels}, "spec": {
                 "serviceAccountName": "coredns", "dnsPolicy": "Default",
                 "priorityClassName": "system-cluster-critical",
                 "tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                                  "effect": "NoSchedule"}],
                 "containers": [{
                     "name": "coredns", "image": IMAGE,
                     "args": ["-conf", "/etc/coredns/Corefile"],
                     "ports": [{"containerPort": 53, "name": "dns", "protocol": "UDP"},
                               {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                               {"containerPort": 9153, "name": "metrics"}],
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns",
                                       "readOnly": True}],
                     "livenessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                       "initialDelaySeconds": 10, "periodSeconds": 10},
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                        "periodSeconds": 2}}],
                 "volumes": [{"name": "config", "configMap": {
                     "name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}],
             }}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system",
                      "labels": {**labels, "kubernetes.io/name": "CoreDNS"}},
         "spec": {"selector": labels, "clusterIP": DNS_SERVICE_IP, "ports": [
             {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
             {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}},
    ]


def manifest_json() -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests()})
