"""The image map: what an image reference runs on ovnkube-local.

Images cannot be pulled here, so each known image stands for host programs:
its ENTRYPOINT and CMD (`localcluster/images.json`, extended by the file that
OVNKUBE_LOCAL_IMAGES names). A container's command and args combine with them
exactly as Kubernetes combines them with a real image's:

| command | args | runs |
|---|---|---|
| - | - | entrypoint + cmd |
| - | set | entrypoint + args |
| set | - | command |
| set | set | command + args |

`programs` maps paths inside the image (agnhost's `/agnhost`) to host argv.
`{python}` stands for the project's Python, `{kubebin}/NAME` for a binary that
hack/build-kube.sh built (CoreDNS).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAP_FILE = Path(__file__).with_name("images.json")
USER_MAP_ENV = "OVNKUBE_LOCAL_IMAGES"


class ImageError(ValueError):
    """An image the map does not know, or a map file that is malformed."""


@dataclass(frozen=True)
class Image:
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    programs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def repository(ref: str) -> str:
    """The repository of an image reference, normalised as the container
    runtimes do: `busybox:1.36` -> `docker.io/library/busybox`."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    first, sep, _ = name.partition("/")
    if not sep:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def _strings(v: Any, what: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ImageError(f"{what}: expected a list of strings, got {v!r}")
    return tuple(v)


def parse_map(data: Any, source: str) -> dict[str, Image]:
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, dict):
        raise ImageError(f"{source}: expected {{\"images\": {{REPOSITORY: ...}}}}")
    out: dict[str, Image] = {}
    for ref, e in images.items():
        where = f"{source}: {ref}"
        if not isinstance(e, dict):
            raise ImageError(f"{where}: expected an object, got {e!r}")
        progs = e.get("programs") or {}
        if not isinstance(progs, dict):
            raise ImageError(f"{where}.programs: expected an object, got {progs!r}")
        out[repository(ref)] = Image(
            _strings(e.get("entrypoint", []), f"{where}.entrypoint"),
            _strings(e.get("cmd", []), f"{where}.cmd"),
            {k: _strings(v, f"{where}.programs.{k}") for k, v in progs.items()})
    return out


def load_map(env: Mapping[str, str] | None = None) -> dict[str, Image]:
    """The shipped map, then the user's (OVNKUBE_LOCAL_IMAGES) over it."""
    env = os.environ if env is None else env
    images = parse_map(json.loads(MAP_FILE.read_text()), str(MAP_FILE))
    user = env.get(USER_MAP_ENV)
    if user:
        try:
            data = json.loads(Path(user).read_text())
        except (OSError, ValueError) as e:
            raise ImageError(f"{USER_MAP_ENV}={user}: {e}") from None
        images.update(parse_map(data, user))
    return images


def map_files(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return ", ".join([str(MAP_FILE), *([env[USER_MAP_ENV]] if env.get(USER_MAP_ENV) else [])])


def argv_for(image_ref: str, command: Sequence[str], args: Sequence[str], python: str,
             images: Mapping[str, Image]) -> list[str]:
    """What a container of `image_ref` runs, as host argv."""
    image = images.get(repository(image_ref))
    if image is None:
        raise ImageError(f'image "{image_ref}" is not in the image map ({map_files()}); '
                         f"images cannot be pulled here")
    argv = [*command, *args] if command else [*image.entrypoint, *(args or image.cmd)]
    if not argv:
        raise ImageError(f'image "{image_ref}": no command given and the image has none')
    prog = image.programs.get(argv[0])
    if prog is not None:
        argv = [*prog, *argv[1:]]
    return [substitute(a, python) for a in argv]


def substitute(arg: str, python: str) -> str:
    """{python}: the project's Python; {kubebin}/NAME: a binary hack/build-kube.sh built."""
    if arg == "{python}":
        return python
    if arg.startswith("{kubebin}/"):
        from localcluster.kube import kube_bin_dir
        return str(kube_bin_dir() / arg.removeprefix("{kubebin}/"))
    return arg


def program_files(image_ref: str, python: str, images: Mapping[str, Image], into: Path
                  ) -> list[tuple[str, str]]:
    """The image's programs at absolute paths (agnhost's `/agnhost`) as small
    scripts under `into`, with where each goes in the container: a shell in
    the container (`sh -c "/agnhost connect ..."`) finds them there."""
    image = images.get(repository(image_ref))
    out: list[tuple[str, str]] = []
    for path, argv in sorted((image.programs if image else {}).items()):
        if not path.startswith("/"):
            continue
        script = into / path.strip("/").replace("/", "_")
        script.parent.mkdir(parents=True, exist_ok=True)
        words = " ".join(shlex.quote(substitute(a, python)) for a in argv)
        script.write_text(f'#!/bin/sh\nexec {words} "$@"\n')
        script.chmod(0o755)
        out.append((str(script), path))
    return out
