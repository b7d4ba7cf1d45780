"""Invert the last feature map of one model for seeded test images of one dataset."""

from medtransfer.protocols.reconstruct import invert
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
settings = snakemake.params.settings
invert(
    weights=snakemake.input.weights, cache=snakemake.input.cache, index=snakemake.input.index,
    out_npz=snakemake.output.images, model=snakemake.wildcards.model, dataset=snakemake.wildcards.dataset,
    n_images=settings["n_images"], steps=settings["steps"], lr=settings["lr"],
    precision=settings["precision"], batch_size=settings["batch_size"], downsample=settings["downsample"],
    output=settings["output"], seed=snakemake.params.seed,
    device=snakemake.params.device,
)
