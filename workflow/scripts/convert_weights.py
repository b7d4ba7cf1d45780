"""Convert one model's source file to the canonical torchvision-layout weights file."""

from medtransfer.runtime import log_to_file
from medtransfer.weights.convert import convert_file

log_to_file(snakemake.log[0])
convert_file(
    snakemake.input.source, snakemake.output.weights, fmt=snakemake.params.fmt,
    model=snakemake.wildcards.model, normalisation=snakemake.params.normalisation,
    arch=snakemake.params.arch, demo=snakemake.params.demo,
    random=snakemake.params.random,
)
