"""Sphinx configuration of the biosnn documentation (``sphinx-build -W -b html docs docs/_build/html``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))
os.environ.setdefault("BIOSNN_PROGRESS", "0")

project = "biosnn"
author = "the biosnn authors"
copyright = "2026, the biosnn authors"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "spec_reference",
]

exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.md5", "auto_examples/*.json"]
templates_path = ["_templates"]
html_theme = "alabaster"
html_static_path: list[str] = []
html_theme_options = {"description": "Biophysical spiking networks on Brian2 and NEST"}

# API reference: one page per public module (autosummary), numpydoc docstrings
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "none"            # the numpydoc sections give types (and units)
numpydoc_show_class_members = False   # autosummary lists members; numpydoc's tables would repeat them
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Gallery: every example in examples/ is rendered; the two offline ones that run in about a minute
# together are executed with small arguments (docs/_ext/gallery_hooks.py) and show the plots they write.
# The others need MNIST or train for minutes: shown as code with their command lines (tests/test_examples.py
# runs all of them on small data).
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"(run_spec|convert_digits)\.py$",
    "ignore_pattern": r"__init__\.py",
    "reset_argv": "gallery_hooks.reset_argv",
    "image_scrapers": ("gallery_hooks.png_scraper",),
    "download_all_examples": False,
    "show_signature": False,
    "remove_config_comments": True,
    "min_reported_time": 3600,
    "write_computation_times": False,
    "abort_on_example_error": True,
    "plot_gallery": "True",
}
suppress_warnings: list[str] = []
