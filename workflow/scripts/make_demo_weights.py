"""Write a random demo stand-in for one model in its published file format."""

from medtransfer.runtime import log_to_file
from medtransfer.weights.demo import write_demo_weights

log_to_file(snakemake.log[0])
write_demo_weights(
    snakemake.output.weights, fmt=snakemake.params.fmt, model=snakemake.wildcards.model,
    seed=snakemake.params.seed, arch=snakemake.params.arch,
    random=snakemake.params.random,
)
