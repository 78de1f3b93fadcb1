"""fastrnn's compiled kernels, installed as ``fastrnn.kernels``.

Numba kernels for the CPU and CUDA C sources (``*.cu``) with their CuPy launchers for the GPU.
Nothing here imports ``fastrnn``: each kernel can be read, tested and benchmarked on its own.
Importing this package imports neither Numba kernels nor CuPy; import the submodule you need.
"""
