"""nginx.conf, rendered from the settings with jinja2 and checked with `nginx -t`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import jinja2

from server.settings import Settings

TEMPLATE = "nginx.conf.j2"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
HEADER_BUFFER_KB = 8  # nginx's default: custom attributes (1 KB at most) fit well inside
CONSOLE_DIR = Path(__file__).with_name("console")  # the web console's static files (SAGESTACK_CONSOLE)


def nginx_binary() -> str:
    path = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if path is None:
        raise FileNotFoundError("nginx is not installed; run `make setup` (apt-get install nginx)")
    return path


def render(settings: Settings) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("server", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(TEMPLATE).render(
        run_as_root=os.geteuid() == 0,
        workers=settings.nginx_workers,
        run_dir=settings.run_dir,
        loglevel=settings.nginx_loglevel,
        max_body_bytes=settings.max_payload_bytes,
        body_buffer_bytes=min(settings.max_payload_bytes, 8 * 1024 * 1024),
        max_payload_mb=f"{settings.max_payload_mb:g}",
        gunicorn_socket=settings.gunicorn_socket,
        address=settings.bind_address,
        port=settings.bind_port,
        proxy_read_timeout=settings.effective_proxy_read_timeout,
        access_log=settings.access_log,
        header_buffer_kb=HEADER_BUFFER_KB,
        console_dir=CONSOLE_DIR if settings.console else None,
    )


def write_config(settings: Settings) -> Path:
    """Render into the run directory, with the temp paths nginx needs to be writable."""
    for name in TEMP_DIRS:
        (settings.run_dir / "nginx" / name).mkdir(parents=True, exist_ok=True)
    path = settings.run_dir / "nginx.conf"
    path.write_text(render(settings))
    return path


def argv(conf: Path, prefix: Path) -> list[str]:
    return [nginx_binary(), "-e", "stderr", "-p", str(prefix), "-c", str(conf)]


def check(conf: Path, prefix: Path) -> None:
    """`nginx -t`; raises with nginx's own message when the config is invalid."""
    result = subprocess.run([*argv(conf, prefix), "-t"], capture_output=True, text=True)
    if result.returncode != 0:
        raise ValueError(f"nginx -t rejected {conf}:\n{result.stderr.strip()}")
