"""Download one model's source file: resumed, retried, sha256-checked, atomic."""

from medtransfer.runtime import log_to_file
from medtransfer.weights.download import fetch

log_to_file(snakemake.log[0])
fetch(
    snakemake.params.url, snakemake.output.source, sha256=snakemake.params.sha256,
    lock_file=snakemake.params.lock,
)
