"""The CRI ImageService over the image map (localcluster/images.py).

Nothing is downloaded: pulling an image the map knows records it as present
on this node (so imagePullPolicy, ListImages and image GC behave as on a real
node); pulling one it does not know fails, naming the image and the map.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import grpc

from localcluster.cri.gen import api_pb2 as pb
from localcluster.cri.gen import api_pb2_grpc as pbg
from localcluster.images import (
    Image,
    ImageError,
    load_map,
    map_files,
    repository,
    substitute,
)


def image_id(repo: str) -> str:
    return "sha256:" + hashlib.sha256(repo.encode()).hexdigest()


def normalized(ref: str) -> str:
    """`busybox` -> `docker.io/library/busybox:latest` (tag kept, digest kept)."""
    repo = repository(ref)
    if "@" in ref:
        return f"{repo}@{ref.split('@', 1)[1]}"
    last = ref.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return f"{repo}:{tag}"


def image_size(image: Image | None) -> int:
    """What the image's programs weigh on this host (the kubelet wants a size
    that is not zero)."""
    if image is None:
        return 1
    progs = {argv[0] for argv in (image.entrypoint, image.cmd, *image.programs.values()) if argv}
    size = 0
    for prog in progs:
        path = shutil.which(substitute(prog, sys.executable))
        if path:
            size += os.path.getsize(path)
    return max(size, 1)


class ImageStore:
    """The images present on this node: tags by image id, saved to a file."""

    def __init__(self, state_file: Path) -> None:
        self.file = state_file
        self._lock = threading.Lock()
        try:
            self.tags: dict[str, list[str]] = json.loads(state_file.read_text())
        except (OSError, ValueError):
            self.tags = {}

    def _save(self) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.tags))
        os.replace(tmp, self.file)

    def resolve(self, ref: str) -> str | None:
        """The id of a present image, by reference or by id."""
        if ref in self.tags:
            return ref
        want = normalized(ref) if not ref.startswith("sha256:") else ref
        return next((i for i, tags in self.tags.items() if want in tags), None)

    def pull(self, ref: str) -> str:
        repo = repository(ref)
        if repo not in load_map():
            raise ImageError(f'image "{ref}" is not in the image map ({map_files()}); '
                             "images cannot be pulled here")
        iid = image_id(repo)
        with self._lock:
            tags = self.tags.setdefault(iid, [])
            if normalized(ref) not in tags:
                tags.append(normalized(ref))
            self._save()
        return iid

    def remove(self, ref: str) -> None:
        with self._lock:
            iid = self.resolve(ref)
            if iid is not None:
                del self.tags[iid]
                self._save()

    def image(self, iid: str) -> pb.Image:
        tags = self.tags.get(iid, [])
        size = image_size(load_map().get(repository(tags[0]))) if tags else 1
        return pb.Image(id=iid, repo_tags=tags, size=size, spec=pb.ImageSpec(image=iid))


class ImageService(pbg.ImageServiceServicer):
    def __init__(self, store: ImageStore, fs_root: Path) -> None:
        self.store = store
        self.fs_root = fs_root

    def ListImages(self, request: pb.ListImagesRequest, context: grpc.ServicerContext
                   ) -> pb.ListImagesResponse:
        want = request.filter.image.image if request.HasField("filter") else ""
        ids = list(self.store.tags)
        if want:
            iid = self.store.resolve(want)
            ids = [iid] if iid else []
        return pb.ListImagesResponse(images=[self.store.image(i) for i in ids])

    def ImageStatus(self, request: pb.ImageStatusRequest, context: grpc.ServicerContext
                    ) -> pb.ImageStatusResponse:
        iid = self.store.resolve(request.image.image)
        if iid is None:
            return pb.ImageStatusResponse()
        return pb.ImageStatusResponse(image=self.store.image(iid))

    def PullImage(self, request: pb.PullImageRequest, context: grpc.ServicerContext
                  ) -> pb.PullImageResponse:
        try:
            return pb.PullImageResponse(image_ref=self.store.pull(request.image.image))
        except ImageError as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
            raise  # not reached: abort raises

    def RemoveImage(self, request: pb.RemoveImageRequest, context: grpc.ServicerContext
                    ) -> pb.RemoveImageResponse:
        self.store.remove(request.image.image)
        return pb.RemoveImageResponse()

    def ImageFsInfo(self, request: pb.ImageFsInfoRequest, context: grpc.ServicerContext
                    ) -> pb.ImageFsInfoResponse:
        used, inodes = 0, 0
        for dirpath, _, files in os.walk(self.fs_root):
            inodes += 1 + len(files)
            for f in files:
                try:
                    used += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    continue
        usage = pb.FilesystemUsage(
            timestamp=time.time_ns(), fs_id=pb.FilesystemIdentifier(mountpoint=str(self.fs_root)),
            used_bytes=pb.UInt64Value(value=used), inodes_used=pb.UInt64Value(value=inodes))
        return pb.ImageFsInfoResponse(image_filesystems=[usage], container_filesystems=[usage])
