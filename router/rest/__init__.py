"""The router's REST front: TF Serving's REST API on a hand-written HTTP/1.1 server, the rest on FastAPI."""
