"""Pooled features of one dataset through one frozen backbone."""

from medtransfer.features.extract import extract
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
extract(
    weights=snakemake.input.weights, cache=snakemake.input.cache, index=snakemake.input.index,
    out=snakemake.output.features, model=snakemake.wildcards.model,
    dataset=snakemake.wildcards.dataset, precision=snakemake.params.precision,
    device=snakemake.params.device, seed=snakemake.params.seed,
    deterministic=snakemake.params.deterministic, compile_model=snakemake.params.compile,
)
