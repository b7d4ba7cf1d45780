"""Weighted kNN probe of one (model, dataset) on cached features."""

from medtransfer.protocols.knn import evaluate_knn
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
evaluate_knn(
    features=snakemake.input.features, rows=snakemake.output.rows,
    predictions=snakemake.output.predictions, seed=snakemake.params.seed,
    device=snakemake.params.device, **snakemake.params.settings,
)
