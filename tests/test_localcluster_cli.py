"""`ovnkube-local`'s pass-through commands take the other program's arguments
as given, with or without `--` (pure parsing, no cluster needed)."""

from __future__ import annotations

import pytest

from localcluster.cli import UsageError, main, split_pass_through


@pytest.mark.parametrize("argv,want", [
    (["nbctl", "--bare", "--columns=name", "list", "Logical_Switch"],
     ("nbctl", {}, None, ["--bare", "--columns=name", "list", "Logical_Switch"])),
    (["nbctl", "--name", "demo", "--bare", "list", "ACL"],
     ("nbctl", {"name": "demo"}, None, ["--bare", "list", "ACL"])),
    (["nbctl", "--name=demo", "--", "show"], ("nbctl", {"name": "demo"}, None, ["show"])),
    (["kubectl", "get", "pods", "-n", "kube-system", "--name", "x"],
     ("kubectl", {}, None, ["get", "pods", "-n", "kube-system", "--name", "x"])),
    (["vsctl", "--node", "w1", "--name", "c", "list-br"],
     ("vsctl", {"node": "w1", "name": "c"}, None, ["list-br"])),
    (["exec", "--name", "c", "default/web", "--", "ip", "-br", "addr"],
     ("exec", {"name": "c"}, "default/web", ["ip", "-br", "addr"])),
    (["exec", "web", "cat", "/etc/hosts"], ("exec", {}, "web", ["cat", "/etc/hosts"])),
    (["node-exec", "w1", "--", "--weird"], ("node-exec", {}, "w1", ["--weird"])),
    (["sbctl", "--", "--name", "x"], ("sbctl", {}, None, ["--name", "x"])),
])
def test_split_pass_through(argv: list[str], want: tuple[object, ...]) -> None:
    assert split_pass_through(argv) == want


@pytest.mark.parametrize("argv,msg", [
    (["exec", "--name", "c"], "give the pod"),
    (["node-exec", "--", "ip", "addr"], "give the node"),
    (["nbctl", "--name"], "--name needs a value"),
])
def test_bad_pass_through_is_named(argv: list[str], msg: str) -> None:
    with pytest.raises(UsageError, match=msg):
        split_pass_through(argv)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec", "--name", "c"]) == 2
    assert "give the pod" in capsys.readouterr().err


def test_fault_commands_name_what_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    # kill/start/restart: a bad signal or an unknown cluster is named, and
    # nothing is touched.
    from localcluster.cli import _signal
    assert _signal("term") == 15 and _signal("SIGKILL") == 9
    with pytest.raises(ValueError, match="--signal 'BOGUS'"):
        _signal("BOGUS")
    assert main(["kill", "ovnnb_db", "--name", "nosuchclstr"]) == 1
    assert "no cluster named 'nosuchclstr'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["restart", "--name", "x"])  # the daemon is required


def test_up_refuses_bad_db_replicas() -> None:
    from localcluster.cluster import Cluster
    with pytest.raises(ValueError, match="--db-replicas 2"):
        Cluster.create("nosuchclstr", 2, db_replicas=2)
    with pytest.raises(ValueError, match="--db-replicas is for the OVN central"):
        Cluster.create("nosuchclstr", 2, db_replicas=3, cni="none")
