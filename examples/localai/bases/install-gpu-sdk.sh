#!/bin/sh
# Installs the GPU SDK for a build type: cublas (CUDA toolkit), hipblas (ROCm), sycl/intel (oneAPI), vulkan, l4t, cpu.
set -eu
build_type=$1 cuda_major=$2 cuda_minor=$3 ubuntu=$4
case "$build_type" in
  cublas)
    curl -fsSLo /tmp/keyring.deb "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu${ubuntu}/$(uname -m | sed s/aarch64/sbsa/)/cuda-keyring_1.1-1_all.deb"
    dpkg -i /tmp/keyring.deb && apt-get update
    apt-get install -y --no-install-recommends "cuda-nvcc-${cuda_major}-${cuda_minor}" "libcublas-dev-${cuda_major}-${cuda_minor}" ;;
  hipblas) apt-get install -y --no-install-recommends hipblas-dev rocblas-dev ;;
  vulkan) apt-get install -y --no-install-recommends libvulkan-dev glslc ;;
  sycl_f16|sycl_f32|intel|l4t|cpu) ;;
  *) echo "unknown build type: $build_type" >&2; exit 1 ;;
esac
