# dranspose-fast's container image:  docker build -t dranspose-fast:0.1.0 .
#
# One image for every role: the entrypoint is the `dranspose-fast` command, so a container runs
# `controller`, `ingester`, `worker`, `reducer`, `debugworker`, `http_ingester` or `replay`
# with dranspose 0.2's flags and environment variables (deploy/kubernetes/ does exactly that).
# Your own worker and reducer classes go into an image built FROM this one:
# docs/deployment.md shows how.
#
# tests/test_image.py runs this file's COPY and RUN steps without a container runtime
# (scripts/check_image.py): keep to the instructions and commands that script knows.

# --- builder: the full Python image has a C compiler and Python's headers, so the wheel and
# its compiled extensions (every _ext/_*.pyx) build here without installing anything else.
FROM python:3.11-bookworm AS builder
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY _ext/ _ext/
COPY dranspose_fast/ dranspose_fast/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- runtime: slim Python with the wheel and its runtime dependencies (all of them binary
# wheels: nothing is compiled here), run as an unprivileged user.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=builder /wheels/ /tmp/wheels/
RUN pip install /tmp/wheels/dranspose_fast-*.whl && rm -rf /tmp/wheels
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/dranspose dranspose
WORKDIR /home/dranspose
# The shipped example (classes and a recorded scan): a smoke test of the image,
#   docker run --rm dranspose-fast:0.1.0 replay -w examples.roi:RoiWorker ...
# and the classes deploy/kubernetes/base runs until an overlay names yours.  Class paths
# (module:Class) are imported from the working directory, as in dranspose 0.2.
COPY --chown=dranspose:dranspose examples/ examples/
USER 10001:10001
# 5000: the HTTP APIs (controller, reducer, debug worker, HTTP ingester);
# 10010: the ZeroMQ ports workers connect to (ingesters) or send results to (reducer).
EXPOSE 5000 10010
ENTRYPOINT ["dranspose-fast"]
CMD ["--help"]
