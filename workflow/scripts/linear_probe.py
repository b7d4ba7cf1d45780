"""Linear probe of one (model, dataset) on cached features."""

from medtransfer.protocols.linear import evaluate_linear
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
evaluate_linear(
    features=snakemake.input.features, rows=snakemake.output.rows,
    predictions=snakemake.output.predictions, seed=snakemake.params.seed,
    device=snakemake.params.device, metric=snakemake.params.metric, **snakemake.params.settings,
)
