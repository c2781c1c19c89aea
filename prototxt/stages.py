"""The training stages of the VOC recipe: each stage's net and the stage it starts from.

A stage's name (`fcn32s`, ...) is what `reproduce.stage` takes, what a runs folder holds
(`RUNS/<stage>/`) and the key of the published numbers (`eval.published`); its net is the
authors' directory name, the key of `prototxt.fcn` and `prototxt.solvers`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One stage: `previous` is the stage whose final weights it starts from (None: the ILSVRC classifier)."""

    name: str
    net: str
    previous: str | None


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("fcn32s", "voc-fcn32s", previous=None),
        Stage("fcn16s", "voc-fcn16s", previous="fcn32s"),
        Stage("fcn8s", "voc-fcn8s", previous="fcn16s"),
        Stage("fcn8s-atonce", "voc-fcn8s-atonce", previous=None),
    )
}


def pipeline(last: str) -> tuple[str, ...]:
    """The stages to train, in order, to reach `last`: ("fcn32s", "fcn16s", "fcn8s") for "fcn8s"."""
    chain = [last]
    while (previous := STAGES[chain[-1]].previous) is not None:
        chain.append(previous)
    return tuple(reversed(chain))


def stage_of_net(net: str) -> str | None:
    """The stage whose net is `net` ("voc-fcn8s" -> "fcn8s"); None for a net no stage trains."""
    return next((stage.name for stage in STAGES.values() if stage.net == net), None)
