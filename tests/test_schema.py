"""The schema reads the authors' net and solver files."""

import pytest
from google.protobuf import text_format

from porting.proto import caffe_pb2


def test_reference_solver_parses(reference):
    solver = text_format.Parse((reference / "voc-fcn8s" / "solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    assert solver.base_lr == pytest.approx(1e-14) and solver.momentum == pytest.approx(0.99)
