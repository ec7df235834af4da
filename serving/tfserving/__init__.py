"""TF Serving's wire contract without TensorFlow: errors, protos, tensors, the REST format and clients.

This is all that `router/` and `experiments/` take from `serving/`; nothing here imports TensorFlow.
"""
