"""The product's C extensions; everything else about the build is in pyproject.toml.

Two hot loops of the data path are C (why, at the top of each file; measurements in the README's
"Performance"): splitting MySQL text-protocol rows into Arrow buffers, and quoting and joining CSV
lines. They need only CPython's headers. A build without a C compiler fails here rather than
shipping a product that silently reads MySQL and writes CSV several times slower. (setup.py, not
pyproject's ``ext-modules`` table, which setuptools still calls experimental.)
"""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror=incompatible-pointer-types"]

setup(
    ext_modules=[
        Extension(
            "osiris_dagster.sources._mysql_rows", ["osiris_dagster/sources/_mysql_rows.c"], extra_compile_args=_FLAGS
        ),
        Extension(
            "osiris_dagster.formats._csv_rows", ["osiris_dagster/formats/_csv_rows.c"], extra_compile_args=_FLAGS
        ),
    ]
)
