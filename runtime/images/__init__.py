"""Images: reading and writing with every check (io.py), the parallel PNG writer (png.py), alpha (alpha.py)."""
