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
CAPTURE_BUFFER_RECORDS = 10_000  # records a gateway worker holds before it drops
CAPTURE_BUFFER_BYTES = 64 << 20  # and payload bytes (a few hundred photos)


class Traffic:
    def __init__(self, gateway: Gateway) -> None:
        settings = gateway.settings
        self.gateway = gateway
        self.config: EndpointConfig | None = None
        if settings.endpoint_config is not None:  # checked by the supervisor before the workers start
            self.config = endpoint_config.read_checked(settings.run_dir)
        capture = self.config.capture if self.config else None
        self.capture = (
            CaptureWriter(capture, CAPTURE_BUFFER_RECORDS, CAPTURE_BUFFER_BYTES)
            if capture and capture.enabled
            else None
        )
        self.shadow = ShadowRunner(gateway, settings.shadow_queue_size, settings.shadow_workers)
        explainer = self.config.explainer if self.config else None
        self.explainer = Explainer(explainer) if explainer else None

    def configured(self, target: Target) -> bool:
        return self.config is not None and target.endpoint == self.config.name

    def answer(self, target: Target, body: handlers.Body, content_type: str | None, accept: str | None,
               timings: RequestTimings, explanations: str | None,
               inference_id: str | None) -> tuple[Reply, str]:  # fmt: skip
        """The gateway's answer, or with an ExplainerConfig, Clarify's: predictions and their explanations
        (`explanations`: the X-Amzn-SageMaker-Enable-Explanations header, which overrides the config's). A whole
        answer is then captured and copied to the shadow (which compares the model's own prediction)."""
        began = time.perf_counter()
        if self.explainer is not None and self.configured(target):
            done = self.explainer.explain(self.gateway, target, body, content_type, accept, timings, explanations)
            reply, reply_type = done.body, done.content_type
            prediction, seconds = done.prediction, done.prediction_seconds
        else:
            reply, reply_type = self.gateway.invoke(target, body, content_type, accept, timings)
            prediction, seconds = reply, time.perf_counter() - began
        if isinstance(reply, bytes) and isinstance(body, bytes) and isinstance(prediction, bytes):
            if target.shadow is not None and self.gateway.chooser.sampled(target.shadow_percentage):
                self.shadow.offer(Copy(target, body, content_type, accept, prediction, seconds))
            self._capture(target, inference_id, body, content_type, reply, reply_type)
        return reply, reply_type

    def _capture(self, target: Target, inference_id: str | None, body: bytes, content_type: str | None,
                 answer: bytes, answer_type: str) -> None:  # fmt: skip
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
