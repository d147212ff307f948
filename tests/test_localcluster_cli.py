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
