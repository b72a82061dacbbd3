"""Shared by the job entrypoints: `python -m jobs.<stage> --config stage.yaml [--flag ...]`.

A stage's YAML holds the same options as its `nmt` subcommand (keys with `_` or `-`), so a
job and a local `nmt` call parse through the very same argparse parser and run the very
same function. Flags after the config override it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import yaml

from pipeline.errors import UserError


def yaml_to_argv(settings: dict) -> list[str]:
    """{"src_lang": "de", "test": [a, b], "gpu": true} -> --src-lang de --test a --test b --gpu"""
    argv: list[str] = []
    for key, value in settings.items():
        flag = "--" + str(key).replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def stage_argv(argv: list[str]) -> list[str]:
    """Expand `--config FILE` into the flags it holds; the remaining flags come after it."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config")
    known, rest = parser.parse_known_args(argv)
    if not known.config:
        return rest
    path = Path(known.config)
    if not path.is_file():
        raise UserError(f"job config {path} not found")
    settings = yaml.safe_load(path.read_text()) or {}
    if not isinstance(settings, dict):
        raise UserError(f"job config {path} must be a mapping of option: value")
    return yaml_to_argv(settings) + rest


def run_stage(command: str, argv: list[str] | None = None) -> int:
    """Run the `nmt <command>` stage as a Ray job: connect to the cluster (RAY_ADDRESS, or
    the job's own cluster under `ray job submit`), then call the CLI's own code.

    For the train stage, a `config:` key in the job YAML names the training config
    (`nmt train --config`)."""
    from pipeline.cli import COMMANDS

    argv = sys.argv[1:] if argv is None else argv
    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser(
        prog=f"python -m jobs.{command.replace('-', '_')} --config JOB.yaml",
        description=f"{COMMANDS[command][1]}. JOB.yaml holds the options below as keys.",
        epilog=getattr(module, "EXAMPLES", None),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    try:
        args = parser.parse_args(stage_argv(argv))
        args.command = command
        _connect()
        return module.run(args) or 0
    except UserError as error:
        print(f"jobs.{command}: error: {error}", file=sys.stderr)
        return 2


def _connect() -> None:
    import ray

    if not ray.is_initialized():
        ray.init(logging_level="WARNING")  # RAY_ADDRESS / the job's cluster, else local
