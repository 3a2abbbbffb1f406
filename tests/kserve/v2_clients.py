"""The kserve package's own v2 clients against a server (run with the kserve venv's python).

InferenceRESTClient (protocols v2 and v1) and InferenceGRPCClient: liveness, readiness, the model's readiness and one
infer each, with the tensor given as JSON data and as numpy. Prints one JSON line of what each client got.
"""

import argparse
import asyncio
import json
import sys

import numpy as np

ARGS = argparse.ArgumentParser()
ARGS.add_argument("--rest", required=True, help="http://host:port")
ARGS.add_argument("--grpc", required=True, help="host:port")
ARGS.add_argument("--model", required=True)
ARGS.add_argument("--values", default="1,2,5")
OPTIONS = ARGS.parse_args()
sys.argv[1:] = []  # kserve parses the command line when it is imported (its ModelServer's flags)

from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest  # noqa: E402
from kserve.inference_client import RESTConfig  # noqa: E402


def request(model: str, values: list[float], as_numpy: bool) -> InferRequest:
    tensor = InferInput("x", [len(values)], "FP32")
    if as_numpy:
        tensor.set_data_from_numpy(np.array(values, dtype=np.float32), binary_data=False)
    else:
        tensor.data = values
    return InferRequest(model_name=model, infer_inputs=[tensor], request_id="kserve-1")


async def rest(url: str, model: str, values: list[float]) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=30))
    try:
        answers = [await client.infer(url, request(model, values, n), model_name=model) for n in (False, True)]
        return {
            "v1": await v1.infer(url, {"instances": values}, model_name=model),
            "live": await client.is_server_live(url),
            "ready": await client.is_server_ready(url),
            "model_ready": await client.is_model_ready(url, model),
            "outputs": [a.outputs[0].as_numpy().tolist() for a in answers],
            "names": [a.outputs[0].name for a in answers],
            "id": answers[0].id,
        }
    finally:
        await client.close()
        await v1.close()


async def grpc(address: str, model: str, values: list[float]) -> dict:
    client = InferenceGRPCClient(address, retries=0, timeout=30)
    try:
        answer = await client.infer(request(model, values, True))
        return {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready(model),
            "outputs": [answer.outputs[0].as_numpy().tolist()],
            "names": [answer.outputs[0].name],
            "id": answer.id,
        }
    finally:
        await client.close()


async def main(args: argparse.Namespace) -> None:
    values = [float(v) for v in args.values.split(",")]
    doc = {"rest": await rest(args.rest, args.model, values), "grpc": await grpc(args.grpc, args.model, values)}
    print(json.dumps(doc))


if __name__ == "__main__":
    asyncio.run(main(OPTIONS))
