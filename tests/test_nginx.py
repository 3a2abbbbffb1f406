"""Every rendered nginx.conf passes `nginx -t`, over a matrix of settings."""

from __future__ import annotations

import itertools

import pytest

from server import nginx
from server.settings import Settings

MATRIX = list(
    itertools.product(
        [("8080", "0.0.0.0"), ("18080", "127.0.0.1")],
        ["0.5", "6", "100"],
        ["30", "300"],
        ["error", "debug"],
        ["auto", "2"],
    )
)


@pytest.mark.parametrize(("bind", "payload", "timeout", "loglevel", "workers"), MATRIX)
def test_rendered_config_passes_nginx_t(tmp_path, bind, payload, timeout, loglevel, workers):
    port, address = bind
    settings = Settings.from_env(
        {
            "SAGEMAKER_BIND_TO_PORT": port,
            "SAGESTACK_BIND_ADDRESS": address,
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": payload,
            "SAGEMAKER_GUNICORN_TIMEOUT_SECONDS": timeout,
            "SAGEMAKER_TFS_NGINX_LOGLEVEL": loglevel,
            "SAGESTACK_NGINX_WORKERS": workers,
            "SAGESTACK_RUN_DIR": str(tmp_path),
        }
    )
    conf = nginx.write_config(settings)
    nginx.check(conf, tmp_path)
    text = conf.read_text()
    assert f"listen {address}:{port}" in text
    assert f"client_max_body_size {settings.max_payload_bytes};" in text
    assert f"proxy_read_timeout {max(60, int(timeout))}s;" in text
    assert "keepalive 256;" in text


def test_check_reports_nginx_errors(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("events {}\nhttp { server { listen nope; } }\n")
    with pytest.raises(ValueError, match="nginx -t rejected"):
        nginx.check(bad, tmp_path)
