"""The model families. Each is one folder: `build.py` (`main(argv)` writes a model directory), `serving/`
(the handler shipped as `code/`), and optionally `commands.py` (its own `sagestack` subcommands).
Adding a family is its folder plus one line here."""

FAMILIES = ("half_plus_three", "credit_risk", "anomaly", "yolov4", "music_transformer")
