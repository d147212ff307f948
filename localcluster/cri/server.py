"""The CRI runtime process of one ovnkube-local node (its containerd).

    python -m localcluster.cri.server --socket S --state-dir D --cni-conf-dir C \
        --cni-bin-dir B [--cni-bin-dir ...] --netns-prefix P --node-name N

It runs inside the node's network namespace, as the kubelet does: the
streaming server the kubelet proxies exec and port-forward to listens on that
namespace's loopback, and CNI plugins run there.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc

from localcluster.cri.gen import api_pb2_grpc as pbg
from localcluster.cri.imageservice import ImageService, ImageStore
from localcluster.cri.runtime import RuntimeConfig, RuntimeService
from localcluster.cri.streaming import StreamingServer


def serve(cfg: RuntimeConfig, socket_path: Path) -> tuple[grpc.Server, StreamingServer]:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    streaming = StreamingServer().start()
    images = ImageStore(cfg.state_dir / "images.json")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="cri"))
    pbg.add_RuntimeServiceServicer_to_server(RuntimeService(cfg, images, streaming), server)
    pbg.add_ImageServiceServicer_to_server(ImageService(images, cfg.state_dir), server)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    return server, streaming


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="localcluster.cri.server")
    ap.add_argument("--socket", required=True, type=Path)
    ap.add_argument("--state-dir", required=True, type=Path)
    ap.add_argument("--cni-conf-dir", required=True, type=Path)
    ap.add_argument("--cni-bin-dir", action="append", required=True, type=Path)
    ap.add_argument("--netns-prefix", required=True)
    ap.add_argument("--node-name", required=True)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = RuntimeConfig(a.state_dir, a.cni_conf_dir, a.cni_bin_dir, a.netns_prefix,
                        a.node_name)
    server, streaming = serve(cfg, a.socket)
    logging.getLogger(__name__).info("CRI runtime for %s on %s, streaming on %s",
                                     a.node_name, a.socket, streaming.address)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    # Containers keep running under their shims, as with containerd: a
    # restarted runtime finds them from its state dir.
    server.stop(2).wait()
    streaming.stop()


if __name__ == "__main__":
    main()
