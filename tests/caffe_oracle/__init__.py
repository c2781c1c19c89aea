"""Real Caffe as the oracle of the `caffe` test tier (see oracle.py)."""
