"""Phase filtering of a net by its layers' include/exclude rules (Caffe's Net::FilterNet).

One prototxt often serves TRAIN and TEST: layers carry `include { phase: TEST }` or
`exclude { stage: "deploy" }` rules and only the layers whose rules meet the net's state are
built. The state is the phase plus the level and stages written in the net's `state`
(Caffe's defaults: level 0, no stages) unless the caller gives them.
"""

from __future__ import annotations

from collections.abc import Iterable

from porting.errors import PrototxtError
from porting.proto import caffe_pb2

PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST}


def phase_value(phase: str) -> int:
    """The `caffe.Phase` enum value of "TRAIN" or "TEST"."""
    try:
        return PHASES[phase.upper()]
    except KeyError:
        raise ValueError(f"phase must be 'TRAIN' or 'TEST', got {phase!r}") from None


def state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    """Caffe's Net::StateMeetsRule: every condition the rule sets must hold."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(stage not in stages for stage in rule.stage):
        return False
    return not any(stage in stages for stage in rule.not_stage)


def layer_included(layer: caffe_pb2.LayerParameter, state: caffe_pb2.NetState, source: str = "<net>") -> bool:
    """No include rules: kept unless an exclude rule matches; else kept if an include rule matches."""
    if layer.include and layer.exclude:
        raise PrototxtError(f"{source}: layer '{layer.name}'", "give either include or exclude rules, not both")
    if layer.include:
        return any(state_meets_rule(state, rule) for rule in layer.include)
    return not any(state_meets_rule(state, rule) for rule in layer.exclude)


def net_state(
    net: caffe_pb2.NetParameter, phase: str, level: int | None = None, stages: Iterable[str] | None = None
) -> caffe_pb2.NetState:
    """The state a net is built in: `phase`, and level/stages from the arguments or else `net.state`."""
    state = caffe_pb2.NetState()
    state.CopyFrom(net.state)
    state.phase = phase_value(phase)
    if level is not None:
        state.level = level
    if stages is not None:
        del state.stage[:]
        state.stage.extend(stages)
    return state


def filter_phase(
    net: caffe_pb2.NetParameter,
    phase: str,
    *,
    level: int | None = None,
    stages: Iterable[str] | None = None,
    source: str = "<net>",
) -> caffe_pb2.NetParameter:
    """A copy of the V2 `net` holding only the layers built in that state; `state` records it."""
    if net.layers:
        raise ValueError("filter_phase needs a V2 net; upgrade it with porting.upgrade.upgrade_net first")
    state = net_state(net, phase, level, stages)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    out.state.CopyFrom(state)
    del out.layer[:]
    out.layer.extend(layer for layer in net.layer if layer_included(layer, state, source))
    return out
