"""The ``cdinn`` command line: one module per command, imported only when that command runs
(so that ``cdinn --help`` and a command's start-up do not pay for the others' imports)."""

COMMANDS = {
    "prepare": "centre, crop, bin and resample a measured scan; write CXI with its geometry",
    "phase": "classical phase retrieval (ER/HIO/RAAR/DM with shrink-wrap)",
    "invert": "invert patterns with a trained network, then refine",
    "watch": "invert every scan that lands in a folder, with a live page of the results",
    "report": "figure of a reconstruction: lab-frame slices, isosurface, strain; .vti/.cxi export",
    "demo": "simulate a strained crystal, invert it with the shipped network and with phase retrieval",
    "train": "train a network (resumes an interrupted run; DDP under torchrun)",
    "models": "list shipped and user models",
    "simulate": "simulate a training set (polygons, superellipsoids, atomistic, faceted) as HDF5 shards",
}
"""Command name -> one-line help; the module ``cdinn.cli.<name>`` registers its options."""
