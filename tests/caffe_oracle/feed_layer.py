"""A Caffe Python data layer that feeds given arrays, pass by pass (Caffe side of the solver comparison).

    layer { type: "Python" top: "data" top: "label"
            python_param { module: "feed_layer" layer: "FeedLayer" param_str: "/path/feed.npz" } }

The .npz holds `<pass>/<top index>` arrays; each forward gives the next pass's arrays, so a solver
with `iter_size: k` takes passes k*i .. k*i + k - 1 for its update i.
"""

import caffe
import numpy as np


class FeedLayer(caffe.Layer):
    def setup(self, bottom, top):
        with np.load(self.param_str) as feed:
            arrays = {key: feed[key] for key in feed.files}
        count = len(arrays) // len(top)
        self.passes = [[arrays[f"{n}/{j}"] for j in range(len(top))] for n in range(count)]
        self.next = 0

    def reshape(self, bottom, top):
        if self.next >= len(self.passes):
            raise IndexError(f"feed_layer: only {len(self.passes)} passes were given")
        for j, array in enumerate(self.passes[self.next]):  # top holds Blob pointers: index it
            top[j].reshape(*array.shape)

    def forward(self, bottom, top):
        for j, array in enumerate(self.passes[self.next]):
            top[j].data[...] = array
        self.next += 1

    def backward(self, top, propagate_down, bottom):
        pass
