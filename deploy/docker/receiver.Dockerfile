# syntax=docker/dockerfile:1
# x86-64 receiver: `uigc gateway` (and the GStreamer plugin for uigcdec pipelines).
# Build from the repository root (deploy/README.md):
#   docker build -f deploy/docker/receiver.Dockerfile -t uigc-receiver .                       # CPU
#   docker build -f deploy/docker/receiver.Dockerfile --target receiver-cuda -t uigc-receiver:cuda .
# Run:
#   docker run -d -p 5004:5004/udp -p 127.0.0.1:8080:8080 -v uigc-archive:/var/lib/uigc uigc-receiver
#   docker run -d --gpus all ... uigc-receiver:cuda gateway --archive /var/lib/uigc/archive --http 0.0.0.0:8080 --ep cuda
ARG RUST_VERSION=1.92
ARG ORT_VERSION=1.23.2

# --- build: the CLI and the plugin (Debian bookworm: GStreamer 1.22) ----------------------------
FROM rust:${RUST_VERSION}-bookworm AS build-base
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src

FROM build-base AS build-cpu
RUN cargo build --release --locked --bin uigc --lib

FROM build-base AS build-cuda
RUN cargo build --release --locked --features cuda,tensorrt --bin uigc --lib

# --- ONNX Runtime: the shared libraries of the PyPI wheels, without Python at run time ----------
FROM python:3.11-slim-bookworm AS ort
ARG ORT_VERSION
WORKDIR /ort
RUN pip download --no-cache-dir --no-deps --only-binary=:all: -d cpu "onnxruntime==${ORT_VERSION}" \
 && pip download --no-cache-dir --no-deps --only-binary=:all: -d gpu "onnxruntime-gpu==${ORT_VERSION}" \
 && for f in cpu gpu; do \
      python -m zipfile -e "$f"/*.whl "$f/whl" \
      && mkdir -p "lib-$f" \
      && cp "$f"/whl/onnxruntime/capi/libonnxruntime*.so* "lib-$f/" \
      && ln -s "$(basename "$(ls "lib-$f"/libonnxruntime.so.*)")" "lib-$f/libonnxruntime.so"; \
    done

# --- receiver with the CUDA execution provider (NVIDIA driver + container toolkit on the host) ---
# cuDNN 9 and CUDA 12 come from the base image; TensorRT is not in it (ep=tensorrt needs
# libnvinfer 10 added, e.g. from NVIDIA's apt repository).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS receiver-cuda
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/uigc --create-home uigc
COPY --from=ort /ort/lib-gpu/ /usr/local/lib/uigc/
COPY --from=build-cuda /src/target/release/uigc /usr/local/bin/uigc
COPY --from=build-cuda /src/target/release/libgstuigc.so /usr/local/lib/gstreamer-1.0/libgstuigc.so
COPY models/uigc-small /usr/local/share/uigc/models/uigc-small
ENV GST_PLUGIN_PATH=/usr/local/lib/gstreamer-1.0 \
    UIGC_ORT_LIBRARY=/usr/local/lib/uigc/libonnxruntime.so
USER 10001:10001
WORKDIR /var/lib/uigc
VOLUME ["/var/lib/uigc"]
EXPOSE 5004/udp 8080/tcp
ENTRYPOINT ["/usr/local/bin/uigc"]
CMD ["gateway", "--archive", "/var/lib/uigc/archive", "--http", "0.0.0.0:8080", "--ep", "cuda"]

# --- receiver on the CPU (the default target: the last stage) ------------------------------------
FROM debian:bookworm-slim AS receiver-cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/uigc --create-home uigc
COPY --from=ort /ort/lib-cpu/ /usr/local/lib/uigc/
COPY --from=build-cpu /src/target/release/uigc /usr/local/bin/uigc
COPY --from=build-cpu /src/target/release/libgstuigc.so /usr/local/lib/gstreamer-1.0/libgstuigc.so
COPY models/uigc-small /usr/local/share/uigc/models/uigc-small
ENV GST_PLUGIN_PATH=/usr/local/lib/gstreamer-1.0 \
    UIGC_ORT_LIBRARY=/usr/local/lib/uigc/libonnxruntime.so
USER 10001:10001
WORKDIR /var/lib/uigc
VOLUME ["/var/lib/uigc"]
EXPOSE 5004/udp 8080/tcp
ENTRYPOINT ["/usr/local/bin/uigc"]
CMD ["gateway", "--archive", "/var/lib/uigc/archive", "--http", "0.0.0.0:8080"]
