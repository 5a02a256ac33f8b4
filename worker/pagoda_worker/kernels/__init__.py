"""Triton kernels of the CUDA fast path. Imported only on CUDA: the CPU path needs no Triton."""
