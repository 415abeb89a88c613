"""int8 inference of the CNN encoder on the CPU.

The encoder is almost all of the classifier's cost (216 M multiply-accumulates per crop
for the shipped network; the heads and the GRU are a few thousand). Quantised to int8
(weights per channel, activations per tensor, conv + BatchNorm + ReLU fused) it runs
2.7x as many faces a second on an AVX2 CPU for 0.2 points of PublicTest accuracy
(fer_batch/weights/README.md, "int8 inference").

The activation ranges come from calibration on FER2013 training crops
(`python -m fer_batch.training.quantize`), done once; the checkpoint then stores each
member's converted int8 encoder state under `INT8_KEY`, and loading rebuilds the same
graph and loads that state, so every load gives the same int8 network without data.

This uses torch.ao's FX graph mode, which torch marks deprecated in favour of torchao's
pt2e flow. pt2e's converted graph is fp32 arithmetic between quantize/dequantize pairs
until torch.compile lowers it; FX mode runs the fbgemm/oneDNN int8 kernels eagerly,
which is what a batch tool that must start fast on any CPU wants. The warnings are
silenced here only, and a test runs the real shipped int8 network on the torch we ship.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from fer_batch.model import EmotionEnsemble, EmotionModel, EmotionNet

INT8_KEY = "int8_encoders"  # checkpoint entry: one converted encoder state per network (ensemble member)
PRECISIONS = ("auto", "fp32", "int8")
_QCONFIG = "x86"  # torch's observer settings for x86 CPUs: 7-bit activations, so no overflow on CPUs without VNNI
# The kernels: oneDNN's int8 convolutions ran the shipped encoder at 330 faces/s against fbgemm's
# 241 on this project's AVX2 machine (the "x86" engine chose fbgemm), to the same PublicTest labels.
# Packed weights keep the engine they were packed with, so it is chosen once, at load.
_ENGINE = "onednn"


def int8_available() -> bool:
    """Whether this torch has the int8 CPU kernels the stored encoders are packed for."""
    return _ENGINE in torch.backends.quantized.supported_engines


@contextmanager
def _packing_engine() -> Iterator[None]:
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = _ENGINE
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


@contextmanager
def _quiet_deprecation() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"torch\.ao\.quantization.*")
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation.*")
        yield


class Int8Encoder(nn.Module):
    """A converted int8 encoder in the float encoder's place: same input, same float features."""

    def __init__(self, graph: nn.Module, output_dim: int) -> None:
        super().__init__()
        self.graph = graph
        self.output_dim = output_dim

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        # The int8 kernels are faster on contiguous (NCHW) inputs than on channels-last ones.
        return self.graph(crops.float().contiguous())


def _members(model: EmotionModel) -> list[EmotionNet]:
    return list(model.members) if isinstance(model, EmotionEnsemble) else [model]


def _prepared(encoder: nn.Module, example: torch.Tensor) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    float_encoder = copy.deepcopy(encoder).float().eval().to(memory_format=torch.contiguous_format)
    with _quiet_deprecation():
        return prepare_fx(float_encoder, get_default_qconfig_mapping(_QCONFIG), (example,))


def _converted(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet_deprecation(), _packing_engine():
        return convert_fx(prepared)


@torch.no_grad()
def calibrate_int8(model: EmotionModel, batches: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Each network's int8 encoder state, its activation ranges observed on `batches` of
    normalised crops (N, 1, H, W) on the CPU: what `INT8_KEY` stores."""
    if not batches:
        raise ValueError("int8 calibration needs at least one batch of crops")
    states = []
    for member in _members(model):
        prepared = _prepared(member.encoder, batches[0][:2])
        for batch in batches:
            prepared(batch.float().contiguous())
        states.append(_converted(prepared).state_dict())
    return states


@torch.no_grad()
def apply_int8(model: EmotionModel, states: list[dict[str, torch.Tensor]], crop_size: int = 48) -> EmotionModel:
    """Put each network's int8 encoder (rebuilt from its stored state) in place of its float encoder."""
    members = _members(model)
    if len(states) != len(members):
        raise ValueError(f"the checkpoint stores {len(states)} int8 encoders for {len(members)} networks")
    for member, state in zip(members, states):
        if isinstance(member.encoder, Int8Encoder):
            raise ValueError("the model's encoder is already int8")
        example = torch.zeros(2, 1, crop_size, crop_size)
        prepared = _prepared(member.encoder, example)
        prepared(example)  # observers need one pass before conversion; the stored state replaces its ranges
        graph = _converted(prepared)
        with _quiet_deprecation(), _packing_engine():
            graph.load_state_dict(state)
        member.encoder = Int8Encoder(graph.eval(), member.encoder.output_dim)
    return model


def resolve_precision(requested: str, device: torch.device, has_int8: bool) -> str:
    """The arithmetic the encoder runs in: "auto" is int8 on a CPU when the checkpoint carries
    int8 encoders and torch has the kernels, fp32 otherwise (CUDA runs fp32; the int8 kernels
    here are CPU ones)."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "int8" if device.type == "cpu" and has_int8 and int8_available() else "fp32"
    if requested == "int8":
        if device.type != "cpu":
            raise ValueError(f"--precision int8 runs on the CPU only, not on {device}; use fp32 or auto there")
        if not int8_available():
            raise ValueError(f"--precision int8: this torch has no {_ENGINE} int8 kernels; use fp32")
        if not has_int8:
            raise ValueError(
                "--precision int8: this checkpoint carries no int8 encoders; add them with "
                "python -m fer_batch.training.quantize CHECKPOINT --data FER2013"
            )
    return requested


def int8_states(payload: dict[str, Any]) -> list[dict[str, torch.Tensor]] | None:
    """A checkpoint payload's stored int8 encoder states, if any."""
    return payload.get(INT8_KEY)
