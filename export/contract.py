"""LSANet's data contract, importable without torch: scale, smallest input, graph I/O names."""

SCALE = 4
MIN_SIZE = 15
INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
