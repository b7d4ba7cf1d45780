"""Decode, make RGB and resize every image of a dataset once, into a uint8 cache."""

from medtransfer.data.cache import build_cache
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
build_cache(
    snakemake.input.index, snakemake.output.cache, size=snakemake.params.size, kind=snakemake.params.kind,
    workers=snakemake.threads, colour=snakemake.params.colour, dataset=snakemake.wildcards.dataset,
)
