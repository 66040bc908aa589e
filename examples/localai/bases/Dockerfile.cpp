# Shared base for the cpp backends: OS image, GPU SDK for the build type, then the cpp toolchain.
ARG OS_IMAGE=ubuntu:24.04
FROM ${OS_IMAGE} AS base
ARG BUILD_TYPE=cpu
ARG CUDA_MAJOR_VERSION=
ARG CUDA_MINOR_VERSION=
ARG UBUNTU_VERSION=2404
ENV DEBIAN_FRONTEND=noninteractive
COPY install-gpu-sdk.sh /usr/local/bin/install-gpu-sdk.sh
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl build-essential git \
 && install-gpu-sdk.sh "$BUILD_TYPE" "$CUDA_MAJOR_VERSION" "$CUDA_MINOR_VERSION" "$UBUNTU_VERSION"
RUN apt-get install -y --no-install-recommends cmake protobuf-compiler libgrpc++-dev
