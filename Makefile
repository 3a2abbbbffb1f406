# sagestack: each target is one user-facing job. `make serve` and `make test` do their own setup.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
MODEL_DIR ?= build/model
PORT ?= 8080
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup system-deps models serve test lint format bench k8s k8s-env k8s-apply k8s-local k8s-local-down image image-test clean

setup: system-deps $(VENV)/.installed

# nginx, wrk (benchmarks) and chromium with its driver (the console's browser tests) from apt when missing.
system-deps:
	@missing=""; command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "please install:$$missing (apt-get install$$missing)"; exit 1; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,pytorch,tooling]'
	$(PY) -m pip install -q --no-deps $$($(PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["sagestack"]["no-deps"]))')
	touch $@

# Build every default model that is missing from $(MODEL_DIR). yolov4_compiled serves BF16 or INT8 only where
# its detections agree with the uncompiled model's past the bar (mean F1 >= 0.9 at IoU 0.5 on the packaged
# photos: models/yolov4/evaluation.py); FP32 otherwise.
models: setup
	@[ -d $(MODEL_DIR)/half_plus_three/1 ] || $(BIN)/sagestack build half_plus_three --out $(MODEL_DIR)/half_plus_three
	@[ -d $(MODEL_DIR)/credit_risk/1 ] || $(BIN)/sagestack build credit_risk --out $(MODEL_DIR)/credit_risk
	@[ -d $(MODEL_DIR)/anomaly/1 ] || $(BIN)/sagestack build anomaly --out $(MODEL_DIR)/anomaly
	@[ -d $(MODEL_DIR)/yolov4/1 ] || $(BIN)/sagestack build yolov4 --out $(MODEL_DIR)/yolov4
	@[ -d $(MODEL_DIR)/yolov4_compiled/1 ] || $(BIN)/sagestack compile $(MODEL_DIR)/yolov4/1/model.tar.gz --framework pytorch \
	  --input-shape '{"input0":[1,3,416,416]}' --target this_machine --backends openvino,onnxruntime --runs 3 \
	  --precision fp32,bf16,int8 --evaluate detections --out $(MODEL_DIR)/yolov4_compiled
	@[ -d $(MODEL_DIR)/music_transformer/1 ] || $(BIN)/sagestack build music_transformer --out $(MODEL_DIR)/music_transformer

# ENV_FILE=build/tune/<model>.env serves with a tuned configuration (from `sagestack tune`).
serve: models
	$(if $(ENV_FILE),set -a && . $(abspath $(ENV_FILE)) && set +a &&) SAGESTACK_MODEL_DIR=$(MODEL_DIR) SAGESTACK_BIND_ADDRESS=$${SAGESTACK_BIND_ADDRESS:-127.0.0.1} \
	  SAGESTACK_CONSOLE=$${SAGESTACK_CONSOLE:-true} SAGESTACK_PROJECTS_DIR=$${SAGESTACK_PROJECTS_DIR:-$(CURDIR)/build/projects} \
	  SAGEMAKER_TFS_DEFAULT_MODEL_NAME=$${SAGEMAKER_TFS_DEFAULT_MODEL_NAME:-half_plus_three} \
	  SAGEMAKER_BIND_TO_PORT=$${SAGEMAKER_BIND_TO_PORT:-$(PORT)} SAGESTACK_RUN_DIR=$${SAGESTACK_RUN_DIR:-$(CURDIR)/build/run} \
	  $(BIN)/sagestack serve

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup lint
	$(BIN)/pytest -q -p no:cacheprovider --durations=25 --ignore=tests/image

bench: setup
	$(BIN)/sagestack bench overhead --worker-class gevent,gevent_h1c --out build/bench/overhead.json

# The CPU image, built with podman from a debootstrap base, offline from build/wheelhouse (containers/build_image.sh).
image: setup
	containers/build_image.sh sagestack:latest containers/Dockerfile.cpu

# The image with every model of build/model, as root and as a non-root user (RUN_AS=sagestack: the same
# layers but the last two), then every Kubernetes overlay under `podman kube play` (tests/image).
image-test: image models
	containers/build_image.sh sagestack:nonroot containers/Dockerfile.cpu --build-arg RUN_AS=sagestack
	SAGESTACK_IMAGES="sagestack:latest sagestack:nonroot" $(BIN)/pytest -q -p no:cacheprovider tests/image

# Render every overlay into build/k8s/<overlay>.yaml (kubectl kustomize, offline), after k8s-env.
k8s: setup k8s-env
	KUBECTL=$(BIN)/kubectl k8s/render.sh build/k8s

# k8s/base/serving.env: the defaults of the variables it names, from server/settings.py (tests check it is current).
k8s-env: setup
	@vars=$$(sed -n 's/^\([A-Z_]*\)=.*/\1/p' k8s/base/serving.env); \
	{ echo "# SageMaker's serving variables, their defaults from server/settings.py (make k8s-env); overlays merge their tuned values (sagestack tune) over these."; \
	  env -i SAGESTACK_MODEL_DIR=/opt/ml/model $(abspath $(BIN))/sagestack config --env $$vars; } > k8s/base/serving.env.new && mv k8s/base/serving.env.new k8s/base/serving.env

# One overlay under `podman kube play` (Deployment, ConfigMap; the model from a local moto S3), until /ping is 200.
OVERLAY ?= half_plus_three
k8s-local: image models
	$(BIN)/python -m containers.k8s_local up $(OVERLAY)

k8s-local-down:
	$(BIN)/python -m containers.k8s_local down $(OVERLAY)

# Apply them with the user's own kubectl and cluster context.
k8s-apply: k8s
	for f in build/k8s/*.yaml; do kubectl apply -f $$f; done

clean:
	rm -rf build
