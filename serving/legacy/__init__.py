"""The legacy system the model is compared with: a fixed rule behind an HTTP API (`modelramp legacy`)."""
