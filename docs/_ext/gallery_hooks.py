"""sphinx-gallery hooks: small arguments for the executed examples, and the PNG files they write as figures.

The examples in ``examples/`` are command-line scripts that save their plots as files
(``--out DIR``) instead of leaving matplotlib figures open; ``reset_argv`` points ``--out``
at a fresh folder per example and ``png_scraper`` shows the PNG files found there.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(tempfile.gettempdir()) / "biosnn-docs-gallery"

#: example file name -> command-line arguments used when the docs build runs it (``--out`` added)
ARGS = {
    "run_spec.py": [str(ROOT / "network_specs" / "cuba.yaml"), "--duration", "0.05", "--backend", "runtime"],
    "convert_digits.py": ["--samples", "20", "--T", "16", "--backend", "runtime"],
}


def _out_dir(src_file) -> Path:
    return OUT / Path(src_file).stem


def reset_argv(gallery_conf, script_vars):
    """Arguments of an executed example (sphinx-gallery's ``reset_argv``)."""
    name = Path(script_vars["src_file"]).name
    out = _out_dir(name)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return ARGS.get(name, []) + ["--out", str(out)]


def png_scraper(block, block_vars, gallery_conf):
    """Move the PNG files the example wrote to its ``--out`` folder into the gallery (sphinx-gallery scraper)."""
    from sphinx_gallery.scrapers import figure_rst
    out = _out_dir(block_vars["src_file"])
    if not out.is_dir():
        return ""
    names = []
    for png in sorted(out.glob("*.png")):
        target = block_vars["image_path_iterator"].next()
        shutil.move(str(png), target)
        names.append(target)
    return figure_rst(names, gallery_conf["src_dir"])
