"""README's supported-layer table per coding matches what convert() does (issue 21)."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import biosnn  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from layer_table import CODINGS, ROWS  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def _table() -> dict[str, dict[str, str]]:
    text = README.read_text(encoding="utf-8")
    body = re.search(r"<!-- layer-table -->\n(.*?)<!-- /layer-table -->", text, re.S).group(1)
    lines = [line for line in body.strip().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert tuple(header[1:]) == CODINGS
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(CODINGS, cells[1:]))
    return rows


def test_readme_table_lists_every_probe_row():
    assert set(_table()) == set(ROWS)


@pytest.mark.parametrize("row", list(ROWS))
def test_readme_table_cells_match_convert(row):
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = _table()[row]
    for coding in CODINGS:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ann = biosnn.prepare(ROWS[row](), coding)
                if coding == "tpc":
                    from biosnn.codings import tpc
                    tpc.calibrate(ann, x)
                biosnn.convert(ann, coding, calibration=x, input_shape=(1, 8, 8))
                got = "yes"
            except ConversionError:
                got = "no"
        assert got == expected[coding], f"{row} / {coding}: README says {expected[coding]}, convert gives {got}"
