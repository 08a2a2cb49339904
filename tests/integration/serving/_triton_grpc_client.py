"""Run tritonclient.grpc in its own process and print the result as JSON.

tritonclient's and KServe's generated protobuf modules both define the ``inference`` package, so
they cannot be imported into one Python process (duplicate symbols in the descriptor pool).
Usage: ``python _triton_grpc_client.py HOST:PORT MODEL ROWS_JSON NUMERIC_JSON``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as triton


def main() -> None:
    url, model, rows_json, numeric_json = sys.argv[1:5]
    rows, numeric = json.loads(rows_json), set(json.loads(numeric_json))
    client = triton.InferenceServerClient(url)
    try:
        inputs = []
        for name in rows[0]:
            if name in numeric:
                tensor = triton.InferInput(name, [len(rows)], "FP64")
                tensor.set_data_from_numpy(np.array([r[name] for r in rows], dtype=np.float64))
            else:
                tensor = triton.InferInput(name, [len(rows)], "BYTES")
                values = [str(r[name]).encode() for r in rows]
                tensor.set_data_from_numpy(np.array(values, dtype=object))
            inputs.append(tensor)
        metadata = client.get_model_metadata(model, as_json=True)
        try:
            result = client.infer(model, inputs)
        except triton.InferenceServerException as error:
            print(json.dumps({"error": str(error), "status": str(error.status())}))
            return
        print(
            json.dumps(
                {
                    "ready": client.is_server_ready(),
                    "inputs": [i["name"] for i in metadata["inputs"]],
                    "version": result.get_response().model_version,
                    "probability": result.as_numpy("probability").tolist(),
                    "label": [v.decode() for v in result.as_numpy("label").tolist()],
                }
            )
        )
    finally:
        client.close()


if __name__ == "__main__":
    main()
