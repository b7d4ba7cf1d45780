"""Generate one demo dataset (images + labels.csv) from the study seed."""

from pathlib import Path

from medtransfer.data.demo import generate
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
generate(
    snakemake.params.kind, Path(snakemake.output.labels).parent, seed=snakemake.params.seed,
    **snakemake.params.settings,
)
