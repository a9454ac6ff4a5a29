"""Making members offline: export to ONNX, quantize, LoRA sites and training, soups, the base model.

:mod:`palm_middleware.engines` runs what these modules produce; it never imports them.
"""
