# syntax=docker/dockerfile:1
# The modelramp image: one console script for the router (`modelramp router --config ...`), the
# legacy system (`modelramp legacy --port 8081`) and the ramp controller (`modelramp ramp ...`), as
# the Helm chart (helm/modelramp) and k8s/ run it. TF Serving uses the official tensorflow/serving
# image instead.
#
#   docker build -t ghcr.io/modelramp/modelramp:0.1.0 .
#
# Not built or tested here: this machine has a Docker client but no Docker engine. What the tests
# do check is that the user id below is the chart's `runAsUser` and that every container's
# arguments parse with the `modelramp` command line (tests/deploy).
#
# Size: the package depends on tensorflow (for `train`, `gate` and `serve-model`), about 2 GB. The
# router never imports it; a slimmer router-only image would install the package with
# --no-deps plus the router's own dependencies.

ARG PYTHON=3.11-slim-bookworm

FROM python:${PYTHON} AS build
WORKDIR /src
# README.md is optional (pyproject names it); the glob keeps COPY from failing without it.
COPY pyproject.toml README.m[d] ./
COPY serving ./serving
COPY router ./router
COPY experiments ./experiments
RUN touch README.md && pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres]'

FROM python:${PYTHON}
# A fixed numeric user: Kubernetes' runAsNonRoot can only verify numeric ids (values.yaml runAsUser).
RUN groupadd --gid 10001 modelramp \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin modelramp
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'modelramp[postgres]' && rm -rf /wheels
# The root filesystem is read-only in the cluster: nothing may write outside /tmp (an emptyDir).
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLCONFIGDIR=/tmp/matplotlib HOME=/tmp
USER 10001:10001
# Router HTTP and gRPC, legacy system.
EXPOSE 8080 8090 8081
ENTRYPOINT ["modelramp"]
CMD ["--help"]
