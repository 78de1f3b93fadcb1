"""The package list for setuptools; everything else is in ``pyproject.toml``.

Found, not listed: every package under ``fastrnn/``, and every package under ``kernels/`` installed
below ``fastrnn`` (``kernels`` -> ``fastrnn.kernels``, the mapping in ``pyproject.toml``'s
``package-dir``). ``pyproject.toml`` cannot say this alone: setuptools' ``packages.find`` names a
package by its folder, so it would install ``kernels/`` as a top-level ``kernels``.
``tests/test_packaging.py`` checks that the wheel holds exactly these packages' files.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["fastrnn", "fastrnn.*"])
      + ["fastrnn." + p for p in find_packages(include=["kernels", "kernels.*"])])
