"""The schema reads the authors' net and solver files."""

from pathlib import Path

import pytest
from google.protobuf import text_format

from porting.proto import caffe_pb2

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "fcn-berkeleyvision"


def test_reference_solver_parses():
    solver = text_format.Parse((REFERENCE / "voc-fcn8s" / "solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    assert solver.base_lr == pytest.approx(1e-14) and solver.momentum == pytest.approx(0.99)
