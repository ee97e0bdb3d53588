"""Build fuzz_decide.pyx against the sanitized vxtun copy given as the first argument."""
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

src = sys.argv.pop(1)
setup(
    script_args=sys.argv[1:],
    ext_modules=cythonize([Extension("fuzz_decide", ["fuzz_decide.pyx"])], include_path=[src],
                          language_level=3),
)
