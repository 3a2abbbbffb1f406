"""Print the image's pip requirements from pyproject.toml (the one place they are pinned).

`python requirements.py deps [--gpu]` -> the project's dependencies; with --gpu, TensorFlow's CUDA wheel
and the PyTorch extra (PyPI's torch is the CUDA build, right for the GPU image; the CPU image leaves it out);
`python requirements.py no-deps` -> what is installed with --no-deps.
"""

import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
if sys.argv[1] == "deps":
    deps = project["project"]["dependencies"]
    if "--gpu" in sys.argv:
        deps = [d.replace("tensorflow-cpu==", "tensorflow[and-cuda]==") for d in deps]
        deps += project["project"]["optional-dependencies"]["pytorch"]
    print("\n".join(deps))
else:
    print("\n".join(project["tool"]["sagestack"]["no-deps"]))
