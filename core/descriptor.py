"""LSANet's model descriptor (after spandrel's ModelDescriptor), importable without torch: the one place
every part reads the network's scale, input floor, alignment, channels and graph I/O names from, and what
the manifest records about the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelDescriptor:
    """What a caller must know to feed the network and read its output."""

    name: str
    scale: int  # output side / input side
    channels: int  # RGB in, RGB out
    min_side: int  # smallest input side the network accepts (its attention's pooling needs it)
    align: int  # stride of the attention's pooling grid: tile origins on its multiples pool the same windows
    input_name: str
    output_name: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


LSANET = ModelDescriptor(name="LSANet", scale=4, channels=3, min_side=15, align=6, input_name="lr", output_name="sr")

# Short names for the fields the code reads most.
SCALE = LSANET.scale
MIN_SIZE = LSANET.min_side
INPUT_NAME = LSANET.input_name
OUTPUT_NAME = LSANET.output_name
