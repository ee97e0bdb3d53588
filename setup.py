"""Build the Cython fast path. Everything else is declared in pyproject.toml.

One extension per module of vxtun/fastpath (each cimports the .pxd of the ones below it, see
vxtun/fastpath/__init__.py), and vxtun._fastpath, which ties them together for the rest of
vxtun.  A C function called across modules goes through a pointer Cython fills at import; the
per-packet helpers that matter (byte access, the virtio-net header) are inline in the .pxd.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

MODULES = ["wire", "fdb", "neigh", "decide", "trace", "coalesce", "send", "threads", "dataplane"]
ARGS = ["-O3", "-Wno-unused-function"]

extensions = [Extension(f"vxtun.fastpath.{m}", [f"vxtun/fastpath/{m}.pyx"],
                        extra_compile_args=ARGS) for m in MODULES]
extensions.append(Extension("vxtun._fastpath", ["vxtun/_fastpath.pyx"], extra_compile_args=ARGS))

setup(
    ext_modules=cythonize(extensions, language_level=3,
                          compiler_directives={"boundscheck": False, "wraparound": False}),
)
