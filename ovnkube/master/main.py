"""`ovnkube master`: elect a leader, then run the controllers against the NB."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import types

from ovnkube.config import ConfigError, add_common_args, from_args

log = logging.getLogger("ovnkube.master")


def parse(argv: list[str]) -> tuple[argparse.Namespace, object]:
    p = argparse.ArgumentParser(prog="ovnkube master")
    add_common_args(p)
    p.add_argument("--workers", type=int, default=int(os.environ.get("OVNKUBE_WORKERS", "16")),
                   help="pods handled in parallel")
    p.add_argument("--no-leader-elect", action="store_true",
                   help="run without a Lease (only one master may then run)")
    p.add_argument("--lease-namespace", default="kube-system")
    p.add_argument("--lease-name", default="ovn-kubernetes-master")
    p.add_argument("--lease-duration", type=float, default=15.0)
    p.add_argument("--renew-deadline", type=float, default=10.0)
    p.add_argument("--retry-period", type=float, default=2.0)
    p.add_argument("--resync-period", type=float, default=600.0)
    p.add_argument("--nb-timeout", type=float, default=30.0,
                   help="seconds to wait for the NB DB at start and for each commit")
    p.add_argument("--identity", default="", help="leader election identity (default: host)")
    p.add_argument("--metrics-bind-address", default=os.environ.get(
        "OVNKUBE_METRICS_BIND_ADDRESS", ""),
        help="IP:PORT to serve Prometheus metrics of the NB writer on (empty: off)")
    args = p.parse_args(argv)
    cfg = from_args(args)
    if args.metrics_bind_address:
        _, _, port = args.metrics_bind_address.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--metrics-bind-address {args.metrics_bind_address!r}: "
                              "want IP:PORT")
    if not cfg.nb_address:
        raise ConfigError("--nb-address is required (e.g. unix:/var/run/ovn/ovnnb_db.sock)")
    return args, cfg


def main(argv: list[str]) -> int:
    try:
        args, cfg = parse(argv)
    except ConfigError as e:
        print(f"ovnkube master: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported here: `--help` and config errors stay fast and need no OVS libs.
    import prometheus_client

    from northd_sync import NorthdSync
    from ovnkube.config import Config
    from ovnkube.kubeclient import api_client
    from ovnkube.leader import LeaderElector
    from ovnkube.master.controller import Master

    assert isinstance(cfg, Config)
    api = api_client(cfg.kubeconfig)
    stop = threading.Event()
    state: dict[str, object] = {}

    def lead() -> None:
        ssl = cfg.nb_ssl or (None, None, None)
        engine = NorthdSync(cfg.nb_address, ssl_key=ssl[0], ssl_cert=ssl[1], ssl_ca=ssl[2],
                            timeout=args.nb_timeout)
        try:
            engine.start()
        except Exception as e:
            log.error("cannot use the NB database at %s: %s", cfg.nb_address, e)
            logging.shutdown()
            os._exit(1)
        if args.metrics_bind_address:
            host, _, port = args.metrics_bind_address.rpartition(":")
            prometheus_client.start_http_server(int(port), host or "0.0.0.0",
                                                registry=engine.registry)
        master = Master(cfg, api, engine, workers=args.workers,
                        resync_period=args.resync_period)
        state["master"], state["engine"] = master, engine
        try:
            master.start()
        except Exception:
            log.exception("master failed to start")
            os._exit(1)
        # The caches built at start-up live as long as the process: keep the
        # cyclic collector from walking them again and again (a big NB cache
        # is hundreds of thousands of objects).
        gc.freeze()

    def lost() -> None:
        # Another master may be writing now: stop at once, kubelet restarts us.
        log.error("leadership lost; exiting")
        os._exit(1)

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    elector = None
    if args.no_leader_elect:
        threading.Thread(target=lead, daemon=True).start()
    else:
        elector = LeaderElector(api, args.lease_namespace, args.lease_name,
                                identity=args.identity or None,
                                lease_duration=args.lease_duration,
                                renew_deadline=args.renew_deadline,
                                retry_period=args.retry_period)
        threading.Thread(target=elector.run, args=(lead, lost), daemon=True).start()
    stop.wait()
    log.info("shutting down")
    master = state.get("master")
    if master is not None:
        master.stop()  # type: ignore[attr-defined]
    engine = state.get("engine")
    if engine is not None:
        engine.stop()  # type: ignore[attr-defined]
    if elector is not None:
        elector.release()
    return 0
