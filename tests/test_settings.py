"""Settings: SageMaker's names and defaults, and start-up errors that name the variable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.stack import ROOT
from server.settings import EnvFileError, Settings, SettingsError, env_defaults, read_env_file, write_env_file


def test_defaults_match_sagemaker():
    s = Settings.from_env({})
    assert s.bind_port == 8080
    assert s.instance_count == 1
    assert (s.inter_op_parallelism, s.intra_op_parallelism) == (0, 0)
    assert s.gpu_mem_margin == 0.2
    assert s.wait_time_seconds == 300
    assert s.default_model_name is None
    assert s.enable_batching is False
    assert (s.max_batch_size, s.batch_timeout_micros) == (8, 1000)
    assert (s.gunicorn_workers, s.gunicorn_threads, s.gunicorn_worker_class) == (1, 1, "gevent")
    assert s.gunicorn_timeout == 30
    assert s.nginx_proxy_read_timeout == 60
    assert s.nginx_loglevel == "error"
    assert s.omp_num_threads == 1
    assert s.multi_model is False
    assert s.max_payload_bytes == 6 * 1024 * 1024


def test_proxy_timeout_follows_a_longer_gunicorn_timeout():
    s = Settings.from_env({"SAGEMAKER_GUNICORN_TIMEOUT_SECONDS": "120"})
    assert s.effective_proxy_read_timeout == 120


def test_values_are_read():
    s = Settings.from_env(
        {
            "SAGEMAKER_SAFE_PORT_RANGE": "10000-10999",
            "SAGEMAKER_TFS_ENABLE_BATCHING": "TRUE",
            "SAGEMAKER_GUNICORN_WORKER_CLASS": "sync",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "0.5",
            "SAGESTACK_MODEL_DIR": "/x/y",
        }
    )
    assert s.safe_port_range == (10000, 10999)
    assert s.enable_batching is True
    assert s.gunicorn_worker_class == "sync"
    assert s.max_payload_bytes == 512 * 1024
    assert s.model_dir == Path("/x/y")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAGEMAKER_BIND_TO_PORT", "http"),
        ("SAGEMAKER_BIND_TO_PORT", "70000"),
        ("SAGEMAKER_TFS_ENABLE_BATCHING", "yes"),
        ("SAGEMAKER_MULTI_MODEL", "1"),
        ("SAGEMAKER_SAFE_PORT_RANGE", "9000"),
        ("SAGEMAKER_SAFE_PORT_RANGE", "9999-9000"),
        ("SAGEMAKER_GUNICORN_WORKER_CLASS", "tornado"),
        ("SAGEMAKER_GUNICORN_WORKERS", "0"),
        ("SAGEMAKER_TFS_FRACTIONAL_GPU_MEM_MARGIN", "1.5"),
        ("SAGEMAKER_TFS_NGINX_LOGLEVEL", "loud"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "lots"),
        ("OMP_NUM_THREADS", "-1"),
        ("SAGESTACK_GRPC_PORT", "grpc"),
        ("SAGESTACK_GRPC_PORT", "8080"),  # the HTTP port
        ("SAGESTACK_GRPC_PORT", "9100"),  # inside the runtimes' SAGEMAKER_SAFE_PORT_RANGE
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def sagestack(command: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The real CLI in a clean environment (only what the test sets)."""
    argv = [sys.executable, "-m", "server.cli", command, *args]
    return subprocess.run(
        argv, env={"PATH": "/usr/bin:/bin", **env}, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_serve_fails_at_start_up_naming_the_variable(tmp_path):
    env = {
        "SAGEMAKER_TFS_ENABLE_BATCHING": "maybe",
        "SAGESTACK_RUN_DIR": str(tmp_path),
    }
    result = sagestack("serve", env)
    assert result.returncode != 0
    assert "SAGEMAKER_TFS_ENABLE_BATCHING" in result.stderr


def test_config_prints_effective_settings(tmp_path):
    env = {"SAGEMAKER_GUNICORN_WORKERS": "3"}
    result = sagestack("config", env)
    assert result.returncode == 0
    assert '"gunicorn_workers": "3"' in result.stdout


def test_too_small_port_range_fails_start_up(hpt_base, tmp_path):
    env = {
        "SAGESTACK_MODEL_DIR": str(hpt_base.parent),
        "SAGESTACK_RUN_DIR": str(tmp_path),
        "SAGEMAKER_SAFE_PORT_RANGE": "23000-23002",
        "SAGEMAKER_TFS_INSTANCE_COUNT": "2",
    }
    result = sagestack("serve", env)
    assert result.returncode == 1
    assert "SAGEMAKER_SAFE_PORT_RANGE 23000-23002 has room for 1" in result.stderr


def test_k8s_serving_env_holds_the_settings_defaults():
    """k8s/base/serving.env is generated (make k8s-env); regenerate it the same way and compare."""
    committed = (ROOT / "k8s" / "base" / "serving.env").read_text().splitlines()
    names = [line.split("=", 1)[0] for line in committed if line and not line.startswith("#")]
    assert "SAGEMAKER_GUNICORN_WORKERS" in names and "SAGESTACK_MODEL_DIR" in names
    result = sagestack("config", {"SAGESTACK_MODEL_DIR": "/opt/ml/model"}, "--env", *names)
    assert result.returncode == 0, result.stderr
    assert [line for line in committed if not line.startswith("#")] == result.stdout.splitlines()


def test_config_env_refuses_an_unknown_variable():
    result = sagestack("config", {}, "--env", "SAGEMAKER_GUNICORN_WORKERZ")
    assert result.returncode != 0
    assert "not a setting: SAGEMAKER_GUNICORN_WORKERZ" in result.stderr


def test_env_defaults_follow_the_settings_defaults():
    defaults = env_defaults()
    s = Settings.from_env({})
    assert defaults["SAGEMAKER_GUNICORN_WORKERS"] == str(s.gunicorn_workers)
    assert defaults["SAGEMAKER_TFS_ENABLE_BATCHING"] == "false"
    assert defaults["SAGEMAKER_SAFE_PORT_RANGE"] == "9000-9999"
    assert "SAGEMAKER_TFS_DEFAULT_MODEL_NAME" not in defaults  # unset means no default model


def test_env_file_round_trip_and_errors(tmp_path):
    path = write_env_file(tmp_path / "tuned.env", {"B": "2", "A": "x=y"}, "note")
    assert path.read_text() == "# note\nA=x=y\nB=2\n"
    assert read_env_file(path) == {"A": "x=y", "B": "2"}
    (tmp_path / "bad.env").write_text("A=1\nnot a pair\n")
    with pytest.raises(EnvFileError, match=r"bad.env:2: expected KEY=VALUE"):
        read_env_file(tmp_path / "bad.env")


def test_the_settings_file_hands_over_exactly_the_validated_settings(tmp_path):
    env = {"SAGESTACK_MME_ALLOWED_PREFIXES": "/srv/models:/data/m", "SAGESTACK_AUTH_TOKEN": "t0k",
           "SAGESTACK_TUNING_DIR": "/tmp/tuning", "SAGEMAKER_SAFE_PORT_RANGE": "20000-20999",
           "SAGESTACK_RESTART_WAIT_SECONDS": "2.5", "SAGEMAKER_TFS_ENABLE_BATCHING": "true"}  # fmt: skip
    settings = Settings.from_env(env)
    path = settings.write(tmp_path / "settings.json")
    assert Settings.load(path) == settings
    assert settings.mme_allowed_prefixes == (Path("/srv/models"), Path("/data/m"))
    assert path.stat().st_mode & 0o077 == 0
    assert settings.as_env()["auth_token"] == "(set)" and "t0k" not in json.dumps(settings.as_env())
    with pytest.raises(SettingsError, match="SAGESTACK_MME_ALLOWED_PREFIXES must list absolute paths"):
        Settings.from_env({"SAGESTACK_MME_ALLOWED_PREFIXES": "relative/dir"})


def test_the_endpoint_configs_async_inference_config_sets_the_async_settings_and_the_variables_win(tmp_path):
    config = {
        "EndpointConfigName": "hpt-async",
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "half_plus_three"}],
        "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://out/results", "S3FailurePath": "s3://out/f"},
                                 "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 7}},
    }  # fmt: skip
    path = tmp_path / "endpoint.json"
    path.write_text(json.dumps(config))
    s = Settings.from_env({"SAGESTACK_ENDPOINT_CONFIG": str(path)})
    assert (s.async_output_path, s.async_failure_path, s.async_max_concurrent_invocations) == (
        "s3://out/results", "s3://out/f", 7)  # fmt: skip
    s = Settings.from_env({"SAGESTACK_ENDPOINT_CONFIG": str(path), "SAGESTACK_ASYNC_MAX_CONCURRENT_INVOCATIONS": "2"})
    assert s.async_max_concurrent_invocations == 2
    path.write_text(json.dumps({**config, "ProductionVariants": [{"VariantName": "x_y"}]}))
    with pytest.raises(SettingsError, match=r"ProductionVariants\[0\]"):
        Settings.from_env({"SAGESTACK_ENDPOINT_CONFIG": str(path)})
