"""The ``ans`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common.errors import ConfigurationError, CredentialsRefused, SourceLost, exit_status
from common.model_files import DECODER_CHOICES
from device_app.learner.persist import StateError, load_state, save_state
from device_app.learner.profile import load_profile
from device_app.learner.registry import POLICY_NAMES, make_policy
from lab.random_schedule import PREFIX as RANDOM_PREFIX, names as random_names
from lab.sim.scenarios import SCENARIOS, Scenario, scenario
from mqtt.codec import CODECS, IMAGE_CODECS
from lab.sim.simulator import DEFAULT_EDGE_RATE, DEFAULT_LAYER_OVERHEAD_S, build_world, run
from device_app.settings import DEVICE_POLICIES
from lab.sim.trace import load_trace


def _scenario(spec: str, frames: int) -> Scenario:
    """A CSV path, the name of a built-in scenario, or ``random-<seed>``."""
    if not Path(spec).exists() and (spec in SCENARIOS or spec.startswith(RANDOM_PREFIX)):
        return scenario(spec, frames)
    return Scenario(load_trace(spec))


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.devices or args.fleet:
        return _simulate_fleet(args)
    if not args.profile or not args.trace:
        raise ValueError("give --profile and --trace (one device), or --devices N / --fleet FILE (a fleet)")
    profile = load_profile(args.profile, args.device_macs_per_s, args.codec)
    if args.calibrate:
        from dataclasses import replace

        from common.bundle import Bundle
        from common.tflite import SegmentRunner
        from device_app.heads import calibrate

        folder = Path(args.profile)
        bundle = Bundle(folder if folder.is_dir() else folder.parent)
        runner = SegmentRunner(bundle, fused_heads=1)  # heads as the device runs them once in use
        profile = replace(profile, front_delay_s=calibrate(runner, log=lambda *_: None))
    world_of = _scenario(args.trace, args.frames)
    world = build_world(profile, world_of.trace, args.frames, args.seed, args.noise, args.key_frame_prob,
                        args.edge_rate, args.layer_overhead_ms * 1e-3, world_of.outliers, world_of.outage)
    policy = make_policy(args.policy, profile, world.oracle_s)
    if (args.state_in or args.state_out) and not policy.stateful:  # said before the run, not after it
        raise StateError(f"policy '{args.policy}' keeps no state to load or save")
    if args.state_in:
        policy.load_state(load_state(args.state_in))
    progress = None
    if not args.json and sys.stderr.isatty():
        def progress(done: int, _splits) -> None:
            print(f"\r{done}/{args.frames} frames", end="", file=sys.stderr, flush=True)
    result = run(policy, world, progress)
    if progress:
        print(file=sys.stderr)
    if args.state_out:
        save_state(args.state_out, policy.state())
    summary = {"profile": profile.name, "trace": args.trace, "seed": args.seed, **result.summary(args.splits)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['policy']} on {profile.name} / {args.trace}, {summary['frames']} frames, seed {args.seed}")
        print(f"  mean delay {summary['mean_delay_s'] * 1e3:.1f} ms   p95 {summary['p95_delay_s'] * 1e3:.1f} ms")
        print(f"  oracle     {summary['oracle_mean_delay_s'] * 1e3:.1f} ms   ratio {summary['ratio_to_oracle']:.3f}"
              f"   regret {summary['regret_s']:.2f} s   offloaded {summary['offload_fraction']:.0%}")
    return 0


def _simulate_fleet(args: argparse.Namespace) -> int:
    """A fleet: every device with its own learner of ``--policy``, sharing the edges."""
    from lab.sim.fleet import fleet_oracle, fleet_policies, load_fleet, make_fleet, simulate_fleet

    if args.policy == "oracle":
        raise ValueError("in a fleet, --oracle scores the fleet oracle; choose a learner with --policy")
    spec = load_fleet(args.fleet) if args.fleet else make_fleet(args.devices, args.edges, args.duration, args.seed)
    log = (lambda m: print(m, file=sys.stderr)) if not args.json else (lambda m: None)
    oracle = fleet_oracle(spec, args.seed, log=log)[1] if args.oracle else None
    result = simulate_fleet(spec, fleet_policies(spec, args.policy, args.seed), args.seed, args.policy)
    summary = result.summary(min(20.0, spec.duration_s / 3), oracle)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.policy}: {len(spec.devices)} devices on {spec.edges} edge(s), {spec.duration_s:g} s, "
          f"seed {args.seed}")
    print(f"  fleet mean {summary['fleet_mean_s'] * 1e3:.1f} ms" + (
        f"   fleet oracle {oracle * 1e3:.1f} ms   ratio {summary['ratio_to_oracle']:.3f}" if oracle else ""))
    print(f"  fairness {summary['fairness']:.3f}   switches/100 frames {summary['switches_per_100']:.2f}   "
          f"edge utilisation {', '.join(f'{u:.0%}' for u in summary['edge_utilisation'])}   "
          f"batch {summary['batch_mean']:.2f}")
    worst = max(summary["device_p95_s"], key=summary["device_p95_s"].get)
    print(f"  worst device p95 {summary['device_p95_s'][worst] * 1e3:.1f} ms ({worst})")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    if args.fleet:
        from lab.sim.fleet_experiment import run_fleet_experiment

        run_fleet_experiment(Path(args.out), seeds=args.seeds, jobs=args.jobs)
        print((Path(args.out) / "fleet.md").read_text())
        return 0
    from lab.sim.experiment import run_experiment

    scenarios = tuple(args.scenarios)
    if args.random:
        scenarios = tuple(random_names(args.first_seed, args.random))
    run_experiment(Path(args.out), tuple(args.profiles), scenarios, tuple(args.policies),
                   args.seeds, args.frames, args.noise, args.key_frame_prob, args.jobs)
    print((Path(args.out) / "summary.md").read_text())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.simulated:
        from lab.sim.demo import run_demo

        return run_demo(Path(args.out), args.frames or 4500)
    from lab.demo import run_system_demo

    return run_system_demo(Path(args.out), args.frames or 300, args.slowdown, not args.no_outage,
                           Path(args.bundle) if args.bundle else None, args.source or "demo")


def cmd_convert(args: argparse.Namespace) -> int:
    # Inputs first: a missing, corrupt or foreign file is one line, before TensorFlow's start-up noise.
    from common.model_files import model_format

    if args.model:
        args.model_format, problem = model_format(args.model)
        if problem:
            raise ValueError(problem)
    for path in [*(args.darknet or []), *([args.labels] if args.labels else [])]:
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such file")
    if args.calibration_images:
        from converter.calibration import calibration_files

        args.calibration_files = calibration_files(args.calibration_images)
    elif args.quantize == "int8" and not args.zoo:
        raise ValueError("--quantize int8 needs --calibration-images DIR: a few hundred frames like the ones the "
                         "device will see, to measure each layer's range")
    # TensorFlow lives on the converting machine only: imported here, never by the device core.
    try:
        from ans.quiet_tensorflow import import_tensorflow

        import_tensorflow()
        from converter.cli import convert_command
    except ImportError as exc:
        raise ValueError(f"ans convert needs TensorFlow and pydantic ({exc}); "
                         "install them with pip install '.[convert]'") from None

    return convert_command(args)


def _logging() -> None:
    import logging

    # Under systemd the journal adds its own timestamps.
    fmt = "%(name)s %(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(name)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt)


def _settings(cls, args: argparse.Namespace, env_prefix: str, flags: dict):
    from common.config import load_settings

    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.broker is not None:
        overrides["mqtt"] = {"broker": args.broker}
    return load_settings(cls, args.config or os.environ.get(f"{env_prefix}CONFIG"), env_prefix, overrides,
                         flag_names={"mqtt.broker": "--broker", "results_out": "--out"})


def _serve(log, serve) -> int:
    """Run a service to its end; the exit status says the cause (``common.errors``): 2 configuration,
    3 refused credentials, 4 source lost (2 and 3 systemd does not restart), anything else 1."""
    try:
        serve()
    except Exception as exc:  # noqa: BLE001  (every cause ends in one line and a status that says which)
        status = exit_status(exc)
        if status == 1:
            log.exception("stopped on an unexpected error (exit 1: restarted under systemd)")
        else:
            log.error("%s", exc)
        return status
    return 0


def cmd_edge(args: argparse.Namespace) -> int:
    import logging

    from common.service import stop_on_sigterm
    from edge_app.settings import EdgeSettings

    settings = _settings(EdgeSettings, args, "ANS_EDGE_", {"bundle": args.bundle, "id": args.id})
    from common.bundle import read_manifest

    read_manifest(settings.bundle)  # a missing or broken bundle is one line, before TensorFlow starts
    try:
        from ans.quiet_tensorflow import import_tensorflow

        import_tensorflow()
        from edge_app.server import EdgeServer
    except ImportError as exc:
        raise ConfigurationError(f"ans edge needs TensorFlow and paho-mqtt ({exc}); pip install '.[edge]'") from None
    _logging()
    stop = stop_on_sigterm()
    return _serve(logging.getLogger("ans.edge"), lambda: EdgeServer(settings).serve(stop))


def cmd_device(args: argparse.Namespace) -> int:
    import logging

    from common.service import stop_on_sigterm
    from device_app.settings import DeviceSettings

    settings = _settings(DeviceSettings, args, "ANS_DEVICE_", {
        "bundle": args.bundle, "source": args.source, "id": args.id, "policy": args.policy, "frames": args.frames,
        "loop": args.loop or None,
        "deadline_ms": args.deadline_ms, "state_dir": args.state_dir, "codec": args.codec,
        "image_codec": args.image_codec, "results_out": args.out, "video_out": args.video_out,
        "emulate_slowdown": args.emulate_slowdown})
    _logging()
    from device_app.app import run_device

    summaries: list[str] = []
    status = _serve(logging.getLogger("ans.device"),
                    lambda: summaries.append(run_device(settings, stop_on_sigterm(), live=sys.stderr.isatty())))
    if summaries:
        print(summaries[0])
    return status


def cmd_monitor(args: argparse.Namespace) -> int:
    try:
        from ans.monitor import run_monitor
    except ImportError as exc:
        raise ValueError(f"ans monitor needs rich and paho-mqtt ({exc}); pip install '.[monitor]'") from None
    from mqtt.connection import MqttSettings

    return run_monitor(MqttSettings(broker=args.broker, username=args.username, password_file=args.password_file,
                                    prefix=args.prefix), args.seconds, args.forget_after or None)


def cmd_service(args: argparse.Namespace) -> int:
    from ans.install import install, uninstall

    if args.action == "install":
        if not args.bundle:
            raise ValueError("ans service install needs --bundle")
        install(args.role, args.bundle, args.broker, args.root, start=not args.no_start)
    else:
        uninstall(args.role, args.root, args.purge)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from mqtt.access import ControlError

    from .broker import add, change, init, limits

    tls = {k: v for k, v in (("ca_file", args.ca_file), ("cert_file", args.cert_file),
                             ("key_file", args.key_file)) if v is not None}
    try:
        if args.action == "init":
            print(init(args.out, args.admin, args.admin_password_file, args.prefix, args.group))
            return 0
        if args.action == "limits":
            if not args.bundle:
                raise ValueError("ans broker limits needs --bundle (every bundle the devices may run)")
            print(limits(args.bundle))
            return 0
        if not args.kind or not args.name or not args.admin_password_file:
            raise ValueError(f"ans broker {args.action} needs KIND NAME and --admin-password-file")
        if args.action == "add":
            print(add(args.kind, args.name, args.password_file, args.broker, args.admin, args.admin_password_file,
                      args.prefix, tls, args.discovery_prefix, args.snapshots))
        else:
            print(change(args.action, args.kind, args.name, args.broker, args.admin, args.admin_password_file, tls,
                         args.snapshots))
    except ControlError as exc:
        print(f"ans broker {args.action}: {exc}", file=sys.stderr)
        return 3
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from common.config import as_toml, example, load_settings, reference
    from device_app.settings import DeviceSettings
    from edge_app.settings import EdgeSettings

    cls, prefix = (DeviceSettings, "ANS_DEVICE_") if args.role == "device" else (EdgeSettings, "ANS_EDGE_")
    if args.action == "example":
        print(example(cls, {"bundle": "/var/lib/ans/bundle"}), end="")
    elif args.action == "reference":
        print(reference(cls), end="")
    else:
        if not args.file:
            raise ValueError("ans config check needs the file to check")
        settings = load_settings(cls, args.file, prefix)
        print(f"# {args.file}: valid; the {args.role}'s settings with {prefix}* variables applied:\n")
        print(as_toml(settings), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ans", description="Autodidactic Neurosurgeon: online split-point learning "
                                     "for collaborative device-edge inference.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conv = sub.add_parser("convert", help="split a detector into TFLite segments (the device), an edge model and a manifest")
    source = conv.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a detector: Keras (.keras or .h5, functional or Sequential), ONNX (opset 11+), "
                        "TFLite (float32) or a TensorFlow SavedModel folder; the format is read from the content")
    source.add_argument("--zoo", choices=["tiny-yolov2", "demo"],
                        help="a built-in detector: the paper's tiny-yolov2 (seeded weights), or the trained demo")
    source.add_argument("--darknet", nargs=2, metavar=("CFG", "WEIGHTS"),
                        help="a Darknet tiny-YOLO .cfg and its .weights (yolov2/v3/v4-tiny)")
    conv.add_argument("--out", required=True, help="bundle folder to write (replaced atomically)")
    conv.add_argument("--decoder", choices=DECODER_CHOICES,
                      default="auto", help="--model: how outputs become detections (default: told by the output "
                      "shapes; yolox-raw: a YOLOX export without the grid decode)")
    conv.add_argument("--labels", metavar="FILE", help="class names, one per line (default: the model's metadata)")
    conv.add_argument("--classes", type=int, default=80, help="zoo: number of classes")
    conv.add_argument("--size", type=int, default=416, help="zoo: input size (a multiple of 32)")
    conv.add_argument("--width", type=float, default=1.0, help="zoo: filter-count multiplier")
    conv.add_argument("--name", help="model name in the manifest (default: the model's own)")
    conv.add_argument("--quantize", choices=["float32", "int8"], default="float32",
                      help="the device's segments: float32, or int8 weights and arithmetic (smaller, faster on "
                           "CPUs and needed by an Edge TPU; input and output stay float32)")
    conv.add_argument("--calibration-images", metavar="DIR",
                      help="a folder of images like the device's frames: each cut tensor's channel ranges for "
                           "the low-bit codecs (int4, int3, int2) and, with --quantize int8, each layer's range "
                           "(the demo detector uses its generated scenes)")
    conv.add_argument("--report", action="store_true",
                      help="also measure each cut-tensor codec's effect on the outputs, split by split; with "
                           "--quantize int8, int8 against float32: head times and accuracy (mAP on the demo clip)")
    conv.set_defaults(func=cmd_convert)

    def app_parser(role: str, help: str) -> argparse.ArgumentParser:
        app = sub.add_parser(role, help=help, description=f"Settings: --config FILE (TOML; `ans config example "
                             f"{role}`), then ANS_{role.upper()}_* variables, then these flags.")
        app.add_argument("--config", help=f"TOML settings file (e.g. /etc/ans/{role}.toml)")
        app.add_argument("--bundle", help="bundle folder written by ans convert")
        app.add_argument("--broker", help="mqtt://host[:port]")
        app.add_argument("--id", help=f"this {role}'s name on the broker")
        return app

    edge = app_parser("edge", "serve a bundle's tails to the devices on a broker")
    edge.set_defaults(func=cmd_edge)

    dev = app_parser("device", "run a detector on a video, offloading through the broker as ANS decides")
    dev.add_argument("--source", help="a video file, camera:N, or demo")
    dev.add_argument("--policy", choices=DEVICE_POLICIES,
                     help="how the split is chosen: ans (default), mu-linucb-paper (the paper's algorithm), linucb, "
                          "device-only, edge-only")
    dev.add_argument("--frames", type=int, help="stop after this many frames")
    dev.add_argument("--loop", action="store_true", help="play a video file (or demo) again when it ends")
    dev.add_argument("--deadline-ms", type=float, help="finish on the device if no result by then")
    dev.add_argument("--state-dir", help="where the calibration and the learner state are kept")
    dev.add_argument("--codec", choices=[*CODECS, "auto"],
                     help="how the cut tensors travel (auto: per split, the fewest bytes within max_map_loss)")
    dev.add_argument("--image-codec", choices=IMAGE_CODECS, help="how split 0 sends the input image")
    dev.add_argument("--out", help="write one JSON line per frame here")
    dev.add_argument("--video-out", help="write the frames with their detections drawn here (.avi or .mp4)")
    dev.add_argument("--emulate-slowdown", type=float, help="lab/demo: run heads this many times slower")
    dev.set_defaults(func=cmd_device)

    mon = sub.add_parser("monitor", help="a live table of every device and edge on a broker")
    mon.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host[:port]")
    mon.add_argument("--prefix", default="ans", help="topic prefix")
    mon.add_argument("--username", help="for brokers with authentication (a user with the ans-monitor role: "
                     "'ans broker add monitor NAME')")
    mon.add_argument("--password-file", help="file holding the password")
    mon.add_argument("--seconds", type=float, help="watch this long, print the table once and exit")
    mon.add_argument("--forget-after", type=float, default=600.0, metavar="SECONDS",
                     help="drop a device or edge that is offline and silent this long (0: keep every one)")
    mon.set_defaults(func=cmd_monitor)

    svc = sub.add_parser("service", help="install or remove the device or edge app as a systemd service",
                         description="Writes /etc/ans/ROLE.toml (kept if present), an empty password file and "
                         "/etc/systemd/system/ans-ROLE.service, then enables and starts it (docs/deploy.md).")
    svc.add_argument("action", choices=["install", "uninstall"], help="install or remove the service")
    svc.add_argument("--role", required=True, choices=["device", "edge"], help="which app the service runs")
    svc.add_argument("--bundle", help="install: the bundle folder the service serves (keep it outside /home)")
    svc.add_argument("--broker", help="install: mqtt://host[:port] written into the new config")
    svc.add_argument("--root", default="/", help="write into this tree instead and run no systemctl (packaging)")
    svc.add_argument("--no-start", action="store_true", help="install: enable, but do not start now")
    svc.add_argument("--purge", action="store_true", help="uninstall: also remove the config and the state")
    svc.set_defaults(func=cmd_service)

    from mqtt.access import KINDS

    brk = sub.add_parser("broker", help="the production broker's access control: roles, devices, edges",
                         description="init writes the dynamic security plugin's file (roles and an administrator) "
                         "before the broker's first start; add, remove, disable and enable change a running broker "
                         "(docs/deploy.md, 'The broker').")
    brk.add_argument("action", choices=["init", "add", "remove", "disable", "enable", "limits"],
                     help="disable: close a client's session and refuse it until enabled, by password or "
                          "certificate (a device flooding the broker); limits: the size limits for "
                          "mosquitto.conf from --bundle")
    brk.add_argument("kind", nargs="?", choices=KINDS, help="what the client is")
    brk.add_argument("name", nargs="?", help="its user name (a device's or edge's id)")
    brk.add_argument("--out", default="/var/lib/mosquitto", help="init: folder for dynamic-security.json")
    brk.add_argument("--admin", default="ans-admin", help="the administrator's user name")
    brk.add_argument("--admin-password-file",
                     help="the administrator's password (init: created with a new one when missing; "
                          "default OUT/admin.password)")
    brk.add_argument("--password-file",
                     help="add: the client's password, created with a new one when missing; "
                          "without it the client logs in by certificate only")
    brk.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="the running broker (all but init)")
    brk.add_argument("--ca-file", help="mqtts: the broker's CA certificate")
    brk.add_argument("--cert-file", help="mqtts: a client certificate")
    brk.add_argument("--key-file", help="mqtts: its key")
    brk.add_argument("--prefix", default="ans", help="topic prefix")
    brk.add_argument("--group", default="ans-edges", help="init: the edges' shared-subscription group")
    brk.add_argument("--snapshots", action="store_true",
                     help="add/enable/disable a monitor or homeassistant user: it may also read the devices' "
                          "annotated snapshots (camera pictures)")
    brk.add_argument("--bundle", nargs="+", help="limits: every bundle the devices may run")
    brk.add_argument("--discovery-prefix", default="homeassistant",
                     help="add: Home Assistant's discovery prefix, where the client may announce its entities")
    brk.set_defaults(func=cmd_broker)

    config = sub.add_parser("config", help="print an example settings file, the reference, or check a file")
    config.add_argument("action", choices=["example", "reference", "check"],
                        help="example: a complete documented file; reference: the keys as a table; "
                             "check: what the app would run with")
    config.add_argument("role", choices=["device", "edge"], help="whose settings")
    config.add_argument("file", nargs="?", help="check: the TOML file")
    config.set_defaults(func=cmd_config)

    sim = sub.add_parser("simulate", help="play one policy through a trace-driven simulated world")
    sim.add_argument("--profile",
                     help="a bundle's manifest.json (or its folder), a paper-schema profile JSON, "
                          "or a built-in profile: tiny-yolov2-tx2, vgg16-tx2")
    sim.add_argument("--trace",
                     help="CSV frame,bandwidth_mbps,rtt_ms,edge_slowdown[,key_frame], "
                          f"a built-in scenario ({', '.join(SCENARIOS)}), or random-SEED: a random schedule "
                          "(lab/random_schedule.py)")
    sim.add_argument("--policy", default="ans", choices=POLICY_NAMES, help="the policy to play (default ans)")
    sim.add_argument("--frames", type=int, default=4500, help="frames to simulate")
    sim.add_argument("--seed", type=int, default=0, help="seed of the noise and key frames")
    sim.add_argument("--noise", type=float, default=0.1, help="relative std of the offloading-delay noise")
    sim.add_argument("--key-frame-prob", type=float, default=0.1,
                     help="chance that a frame is a key frame (ignored when the trace has a key_frame column)")
    sim.add_argument("--edge-rate", type=float, default=DEFAULT_EDGE_RATE, help="edge MAC/s at slowdown 1")
    sim.add_argument("--layer-overhead-ms", type=float, default=DEFAULT_LAYER_OVERHEAD_S * 1e3,
                     help="edge cost per back-end layer at slowdown 1")
    sim.add_argument("--device-macs-per-s", type=float, default=3.0e10,
                     help="device speed, to estimate front-end delays of a manifest (which holds none)")
    sim.add_argument("--codec", default="float32", choices=CODECS,
                     help="cut-tensor codec whose payload size is sent (bundle manifests only)")
    sim.add_argument("--calibrate", action="store_true",
                     help="bundle profiles: measure every split's front-end delay by running its head here")
    sim.add_argument("--state-in", help="start the learner from this saved state (warm start)")
    sim.add_argument("--state-out", help="save the learner's state here at the end")
    sim.add_argument("--splits", action="store_true", help="include the chosen split of every frame")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--devices", type=int, help="a fleet: this many heterogeneous devices (tiny-YOLOv2), each "
                     "learning on its own, sharing --edges edges")
    sim.add_argument("--edges", type=int, default=1, help="edges the fleet shares (default 1)")
    sim.add_argument("--duration", type=float, default=120.0, help="fleet: seconds to simulate (default 120)")
    sim.add_argument("--fleet", help="a fleet described in JSON (devices, their links, speeds, joins and leaves)")
    sim.add_argument("--oracle", action="store_true", help="fleet: also search the fleet oracle (minutes for 64 devices)")
    sim.set_defaults(func=cmd_simulate)

    exp = sub.add_parser("experiment", help="every policy on every scenario and profile; table and plots")
    exp.add_argument("--out", default="results", help="folder for the table, JSON and plots")
    exp.add_argument("--profiles", nargs="+", default=["tiny-yolov2-tx2", "vgg16-tx2"],
                     help="built-in profiles, paper-schema JSON files or bundles; NAME+codecs: every "
                          "offloading split also as a small codec that costs encoding time (lab/sim/codec_arms.py)")
    exp.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS),
                     help="built-in scenarios to run")
    exp.add_argument("--random", type=int, default=0, metavar="N",
                     help="instead of the built-in scenarios, N random schedules (steps and drifts of bandwidth, "
                          "RTT and edge load, outlier frames, restarts), seeds --first-seed on")
    exp.add_argument("--first-seed", type=int, default=0, help="the first random schedule's seed (default 0)")
    exp.add_argument("--policies", nargs="+", default=list(POLICY_NAMES), choices=POLICY_NAMES,
                     help="policies to compare")
    exp.add_argument("--seeds", type=int, default=5, help="runs per policy, scenario and profile")
    exp.add_argument("--frames", type=int, default=4500, help="frames per run")
    exp.add_argument("--noise", type=float, default=0.1, help="relative std of the offloading-delay noise")
    exp.add_argument("--key-frame-prob", type=float, default=0.1, help="chance that a frame is a key frame")
    exp.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per core)")
    exp.add_argument("--fleet", action="store_true",
                     help="the fleet experiment instead: 4-64 devices on 1-4 edges against the fleet oracle, and "
                          "newcomers with and without the edge's compute table (--seeds applies)")
    exp.set_defaults(func=cmd_experiment)

    demo = sub.add_parser("demo", help="the whole system on this machine: broker, edge and a device on the demo clip",
                          description="Converts the demo detector, starts a private Mosquitto, an edge and a device "
                          "on the generated demo clip (stopping and restarting the edge half-way), then prints a "
                          "summary and writes the annotated video and a plot. --simulated instead runs the learner "
                          "alone in a simulated world (the paper's tiny-YOLOv2 profile, a bandwidth drop).")
    demo.add_argument("--out", default="demo-output", help="folder for the bundle, video, results and plot")
    demo.add_argument("--frames", type=int, help="frames to run (default 300; 4500 with --simulated)")
    demo.add_argument("--slowdown", type=float, default=30.0,
                      help="run heads this many times slower, standing in for a board slower than this machine")
    demo.add_argument("--no-outage", action="store_true", help="do not stop and restart the edge half-way")
    demo.add_argument("--bundle", help="your converted model (ans convert --out B) instead of the demo detector")
    demo.add_argument("--source", help="a video file or camera:N instead of the demo clip")
    demo.add_argument("--simulated", action="store_true", help="the learner alone, in a simulated world")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigurationError, CredentialsRefused, SourceLost) as exc:
        print(f"ans {args.command}: error: {exc}", file=sys.stderr)
        return exit_status(exc)
    except (ValueError, OSError) as exc:  # a one-shot command (convert, broker, simulate...) given something unusable
        print(f"ans {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
