"""What SAGESTACK_ENDPOINT_CONFIG does with a request besides routing it: data capture, the shadow copy and
Clarify's online explanations, each only for requests to the configured endpoint.

Capture and shadow see a request once production has its whole answer, and never hold it up (server.data_capture,
server.shadow); explanations replace the answer when the request or the config asks for them (server.explainer).
"""

from __future__ import annotations

import time

from server import endpoint_config, handlers
from server.data_capture import CaptureWriter, Event
from server.endpoint_config import EndpointConfig
from server.explainer import Explainer
from server.gateway import Gateway, Reply, Target
from server.request_log import RequestTimings
from server.shadow import Copy, ShadowRunner

INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
ENABLE_EXPLANATIONS = "X-Amzn-SageMaker-Enable-Explanations"
CAPTURE_BUFFER_RECORDS = 10_000  # records a gateway worker holds before it drops (a few MB of small requests)


class Traffic:
    def __init__(self, gateway: Gateway) -> None:
        settings = gateway.settings
        self.gateway = gateway
        self.config: EndpointConfig | None = None
        if settings.endpoint_config is not None:  # checked by the supervisor before the workers start
            self.config = endpoint_config.load(settings.endpoint_config)
        capture = self.config.capture if self.config else None
        self.capture = CaptureWriter(capture, CAPTURE_BUFFER_RECORDS) if capture and capture.enabled else None
        self.shadow = ShadowRunner(gateway, settings.shadow_queue_size, settings.shadow_workers)
        explainer = self.config.explainer if self.config else None
        self.explainer = Explainer(explainer) if explainer else None

    def configured(self, target: Target) -> bool:
        return self.config is not None and target.endpoint == self.config.name

    def invoke(self, target: Target, body: handlers.Body, content_type: str | None, accept: str | None,
               timings: RequestTimings, explanations: str | None) -> tuple[Reply, str]:  # fmt: skip
        """The gateway's answer, or with an ExplainerConfig, Clarify's: predictions and their explanations
        (`explanations`: the X-Amzn-SageMaker-Enable-Explanations header, which overrides the config's)."""
        if self.explainer is not None and self.configured(target):
            return self.explainer.explain(self.gateway, target, body, content_type, accept, timings, explanations)
        return self.gateway.invoke(target, body, content_type, accept, timings)

    def observe(self, target: Target, inference_id: str | None, body: bytes, content_type: str | None,
                accept: str | None, answer: bytes, answer_type: str, seconds: float) -> None:  # fmt: skip
        """After production's whole answer: capture it (its sampled share) and copy it to the shadow."""
        if target.shadow is not None and self.gateway.chooser.sampled(target.shadow_percentage):
            self.shadow.offer(Copy(target, body, content_type, accept, answer, seconds))
        if self.capture is None or not self.configured(target):
            return
        if not self.gateway.chooser.sampled(self.capture.capture.percentage):
            return
        modes = self.capture.capture.modes
        self.capture.offer(Event(
            target.endpoint, target.variant, inference_id, time.time(),
            body if "Input" in modes else None, content_type or "application/octet-stream",
            answer if "Output" in modes else None, answer_type,
        ))  # fmt: skip
