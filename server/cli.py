"""`sagestack`: one command for every user-facing job; each subcommand imports only what it needs.

The service's own subcommands (serve, config, fetch-model) live here. Every other owner contributes its
subcommands through a `commands.py` with `add_parsers(subparsers)`, found by module name, so `server/`
imports none of them and an image without bench/ simply has no `bench` command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from server import owners
from server.settings import Settings, SettingsError

# Owners of the other subcommands, by module name (the service does not import its tooling).
T = TypeVar("T")
COMMAND_MODULES = (
    "models.commands",
    "compiler.commands",
    "bench.commands",
    "containers.commands",
    "transform.commands",
)


def or_exit(read: Callable[[], T]) -> T:
    """What `read` gets from the environment, or a one-line error naming the bad variable."""
    try:
        return read()
    except SettingsError as exc:
        raise SystemExit(f"sagestack: {exc}") from None


def settings_or_exit() -> Settings:
    """The validated settings, or a one-line error naming the bad variable (every subcommand uses this)."""
    return or_exit(Settings.from_env)


def cmd_serve(args: argparse.Namespace) -> int:
    from server.supervisor import serve

    return serve(settings_or_exit())


def cmd_fetch_model(args: argparse.Namespace) -> int:
    from server import model_archive

    settings = settings_or_exit()
    url = args.url or settings.model_url
    if not url:
        raise SystemExit("sagestack fetch-model: give a URL or set SAGESTACK_MODEL_URL")
    try:
        names = model_archive.fetch(url, args.dest or settings.model_dir)
    except (model_archive.ArchiveError, OSError) as exc:
        raise SystemExit(f"sagestack fetch-model: {exc}") from None
    print(f"fetch-model: {url} -> {args.dest or settings.model_dir}: {', '.join(names)}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.env is None:
        print(json.dumps(settings_or_exit().as_env(), indent=2))
        return 0
    from server.settings import env_values

    values = or_exit(env_values)
    unknown = [name for name in args.env if name not in values]
    if unknown:
        raise SystemExit(f"sagestack config: not a setting: {', '.join(unknown)}")
    for name in args.env or sorted(values):
        print(f"{name}={values[name]}")
    return 0


def add_service_parsers(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("serve", help="start runtimes, gunicorn and nginx (the container entry point)").set_defaults(
        fn=cmd_serve
    )
    co = sub.add_parser("config", help="print the effective settings")
    co.add_argument("--env", nargs="*", metavar="VAR", help="as KEY=VALUE lines, of these variables (default: all)")
    co.set_defaults(fn=cmd_config)
    fm = sub.add_parser("fetch-model", help="put a model.tar.gz (s3://, file:// or a path) into the model directory")
    fm.add_argument("url", nargs="?", help="default: $SAGESTACK_MODEL_URL")
    fm.add_argument("--dest", type=Path, help="default: $SAGESTACK_MODEL_DIR")
    fm.set_defaults(fn=cmd_fetch_model)
    from server import endpoint_commands

    endpoint_commands.add_parsers(sub)


def installed_command_modules() -> list:
    """The owners' command modules that are present (the serving image ships without bench/)."""
    return owners.installed(COMMAND_MODULES)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sagestack", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    add_service_parsers(sub)
    for module in installed_command_modules():
        module.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.fn(args))


def serve_main() -> None:
    """The plain `serve` script, so `docker run image serve` works as SageMaker calls it."""
    extra = [a for a in sys.argv[1:] if a != "serve"]
    if extra:
        raise SystemExit(f"serve: unexpected arguments {extra} (SageMaker runs the image as `serve`)")
    main(["serve"])


if __name__ == "__main__":
    main()
