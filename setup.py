"""The one compiled part of cdinn: the fused CPU loops of a phase-retrieval iteration
(src/cdinn/retrieval/_fused.c). Optional: where it cannot be built (no C compiler or no
OpenMP), cdinn runs the same arithmetic as torch operations (cdinn.retrieval.kernels)."""

import sys

from setuptools import Extension, setup

openmp = [] if sys.platform == "win32" else ["-fopenmp"]
setup(ext_modules=[Extension(
    "cdinn.retrieval._fused",
    ["src/cdinn/retrieval/_fused.c"],
    extra_compile_args=["-O3", "-fno-math-errno", *openmp] if sys.platform != "win32" else ["/O2", "/openmp"],
    extra_link_args=openmp,
    optional=True,
)])
