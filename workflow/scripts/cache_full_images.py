"""Decode the training images of a dataset once more, whole, for finetuning's crops."""

from medtransfer.data.cache import build_full_cache
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
settings = snakemake.params.settings
build_full_cache(
    snakemake.input.index, snakemake.output.full, size=snakemake.params.size, scale=settings["full_scale"],
    max_aspect=settings["full_max_aspect"], kind=snakemake.params.kind,
    workers=snakemake.threads, colour=snakemake.params.colour, dataset=snakemake.wildcards.dataset,
)
