# syntax=docker/dockerfile:1
# Jetson sender (aarch64, JetPack 6 / L4T r36: Ubuntu 22.04, CUDA 12.6, TensorRT 10): the uigc
# plugin and CLI built with the CUDA and TensorRT execution providers, onnxruntime-gpu for
# JetPack, the default model. Build ON the Jetson from the repository root (deploy/README.md):
#   docker build -f deploy/docker/jetson.Dockerfile -t uigc-jetson .
# Run (USB camera; the sender's settings are the variables of deploy/systemd/sender.env):
#   docker run -d --runtime nvidia --device /dev/video0 --group-add video \
#     -e UIGC_HOST=192.0.2.10 -e UIGC_EP=cuda uigc-jetson
ARG L4T_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0
ARG RUST_VERSION=1.92.0
# onnxruntime-gpu for JetPack 6 (CUDA 12.6, Python 3.10) from NVIDIA's Jetson AI Lab package index
# (the successor of the Jetson Zoo wheels). Any version >= 1.17 works with the `ort` crate; pick
# one the index lists.
ARG ORT_INDEX=https://pypi.jetson-ai-lab.io/jp6/cu126
ARG ORT_VERSION=1.23.0

# --- build on the device: JetPack's Ubuntu 22.04 ships GStreamer 1.20 ---------------------------
FROM ${L4T_IMAGE} AS build
ARG RUST_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential ca-certificates curl pkg-config \
      libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo PATH=/opt/cargo/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain "${RUST_VERSION}"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# JetPack 6's GStreamer is 1.20, the crate's bindings ask for 1.22 (Cargo.toml): build them for
# the API level the device has (GST_API=v1_20; the library needs nothing newer: `cargo check` of
# the plugin with v1_20 passes) or keep v1_22 on a base with GStreamer >= 1.22.
ARG GST_API=v1_20
RUN sed -i "s/\"v1_22\"/\"${GST_API}\"/" Cargo.toml \
 && cargo build --release --locked --features cuda,tensorrt --bin uigc --lib

# --- ONNX Runtime for JetPack: the wheel's shared libraries (CPU, CUDA and TensorRT providers) ---
FROM ${L4T_IMAGE} AS ort
ARG ORT_INDEX
ARG ORT_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /ort
RUN pip3 download --no-cache-dir --no-deps --only-binary=:all: --index-url "${ORT_INDEX}" \
      -d whl "onnxruntime-gpu==${ORT_VERSION}" \
 && python3 -m zipfile -e whl/*.whl whl/x \
 && mkdir lib \
 && cp whl/x/onnxruntime/capi/libonnxruntime*.so* lib/ \
 && ln -s "$(basename "$(ls lib/libonnxruntime.so.*)")" lib/libonnxruntime.so

# --- the sender image ------------------------------------------------------------------------------
FROM ${L4T_IMAGE} AS sender
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --groups video --home-dir /var/lib/uigc \
      --create-home uigc
COPY --from=ort /ort/lib/ /usr/local/lib/uigc/
COPY --from=build /src/target/release/uigc /usr/local/bin/uigc
COPY --from=build /src/target/release/libgstuigc.so /usr/local/lib/gstreamer-1.0/libgstuigc.so
COPY models/uigc-small /usr/local/share/uigc/models/uigc-small
COPY deploy/systemd/uigc-sender.sh /usr/local/lib/uigc/uigc-sender
# TensorRT engines are cached under the home directory (mount a volume to keep them).
ENV GST_PLUGIN_PATH=/usr/local/lib/gstreamer-1.0 \
    UIGC_ORT_LIBRARY=/usr/local/lib/uigc/libonnxruntime.so \
    UIGC_SOURCE=v4l2 UIGC_CAMERA=/dev/video0 UIGC_PORT=5004 UIGC_EP=cuda
USER 10001:10001
WORKDIR /var/lib/uigc
VOLUME ["/var/lib/uigc"]
ENTRYPOINT ["/usr/local/lib/uigc/uigc-sender"]
