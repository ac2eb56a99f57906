"""Run the simulator standalone: ``python -m services.simulator --port 8090 [--host H]``.

Prints ``simulator http://HOST:PORT`` once it is listening and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import msgspec

from services.simulator.faults import FaultSpecError, fault_from_spec
from services.simulator.server import SimulatorServer
from shared.schemas.simulator import FaultConfig, SimulatorConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.simulator", description=__doc__)
    p.add_argument("--config", type=Path, help="SimulatorConfig as a .toml or .json file")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind, 0 = any free port (default 8090)")
    p.add_argument("--seed", type=int, help="seed for reply text and error_rate (default 0)")
    p.add_argument("--words", type=int, help="words per reply after the prefix (default 12)")
    p.add_argument("--fault", metavar="SPEC", help="default faults, e.g. 'latency=50,status=503,error_rate=0.1'")
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="named fault profile served under /p/NAME (repeatable), e.g. 'flaky=status=503,error_rate=0.5'",
    )
    return p


def build_config(argv: list[str] | None = None) -> SimulatorConfig:
    """The SimulatorConfig described by the command line (flags override ``--config``)."""
    args = _parser().parse_args(argv)
    config = SimulatorConfig(port=8090)
    if args.config is not None:
        raw = args.config.read_bytes()
        if args.config.suffix == ".toml":
            config = msgspec.toml.decode(raw, type=SimulatorConfig)
        else:
            config = msgspec.json.decode(raw, type=SimulatorConfig)
    changes: dict[str, object] = {}
    for flag, field in (("host", "host"), ("port", "port"), ("seed", "seed"), ("words", "words_per_reply")):
        if getattr(args, flag) is not None:
            changes[field] = getattr(args, flag)
    if args.fault is not None:
        changes["default"] = fault_from_spec(args.fault)
    if args.profile:
        profiles: dict[str, FaultConfig] = dict(config.profiles)
        for item in args.profile:
            name, sep, spec = item.partition("=")
            if not sep or not name:
                raise FaultSpecError(f"--profile expects NAME=SPEC, got {item!r}")
            profiles[name] = fault_from_spec(spec)
        changes["profiles"] = profiles
    # convert() re-validates the constraints (port range, words_per_reply...) of the merged config
    merged = msgspec.structs.replace(config, **changes)
    return msgspec.convert(msgspec.to_builtins(merged), SimulatorConfig)


async def serve(config: SimulatorConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    server = SimulatorServer(config)
    url = await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"simulator {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    try:
        config = build_config(argv)
    except (FaultSpecError, msgspec.ValidationError, msgspec.DecodeError, OSError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        runner: asyncio.Runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
