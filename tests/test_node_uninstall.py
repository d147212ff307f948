"""How the node agent tells an uninstall from a restart, against a real
kube-apiserver: its DaemonSet there means keep (a restart, an upgrade); the
DaemonSet deleted, or the agent's own account no longer let in, means give
the node back; and the watch knows of the deletion as it happens."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from kubernetes import client, config

from localcluster.kube import KubeControlPlane, kube_bin, write_kubeconfig
from node.uninstall import DaemonSetWatch, daemonset_gone
from tests.waiting import eventually


def daemonset(name: str) -> dict[str, object]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "pause"}]}}}}


def test_a_daemonset_there_is_kept_and_a_deleted_one_seen(kube_api: KubeControlPlane) -> None:
    api = kube_api.api_client()
    ns = f"un-{secrets.token_hex(3)}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    apps = client.AppsV1Api(api)
    apps.create_namespaced_daemon_set(ns, daemonset("ovnkube-node"))
    apps.create_namespaced_daemon_set(ns, daemonset("other"))
    seen: list[str] = []
    watch = DaemonSetWatch(api, ns, "ovnkube-node", on_deleted=lambda: seen.append("x")).start()
    try:
        assert not daemonset_gone(api, ns, "ovnkube-node")
        apps.delete_namespaced_daemon_set("other", ns)  # another one going is not ours
        assert not watch.deleted.wait(2) and seen == []
        apps.delete_namespaced_daemon_set("ovnkube-node", ns)
        eventually(watch.deleted.is_set, 10, "the watch to see the deletion")
        assert seen == ["x"]
        assert daemonset_gone(api, ns, "ovnkube-node")
    finally:
        watch.stop()


def test_an_account_no_longer_let_in_means_uninstalled(kube_api: KubeControlPlane,
                                                        tmp_path: Path) -> None:
    api = kube_api.api_client()
    ns = f"un-{secrets.token_hex(3)}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    client.AppsV1Api(api).create_namespaced_daemon_set(ns, daemonset("ovnkube-node"))
    client.CoreV1Api(api).create_namespaced_service_account(ns, {"metadata": {"name": "sa"}})
    kubectl = [str(kube_bin("kubectl")), f"--kubeconfig={kube_api.kubeconfig}"]
    token = subprocess.run([*kubectl, "create", "token", "sa", "-n", ns],
                           capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    kc = write_kubeconfig(tmp_path / "sa.kubeconfig", kube_api.server,
                          kube_api.pki / "ca.crt", token)
    rightless = config.new_client_from_config(str(kc))
    assert daemonset_gone(rightless, ns, "ovnkube-node")  # 403: no rights (any more)
