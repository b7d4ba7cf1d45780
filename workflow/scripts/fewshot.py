"""Few-shot evaluation of one (model, dataset, setting) on the shared episodes."""

from medtransfer.protocols.fewshot import evaluate_fewshot
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
evaluate_fewshot(
    features=snakemake.input.features, episodes=snakemake.input.episodes,
    rows=snakemake.output.rows, predictions=snakemake.output.predictions,
    seed=snakemake.params.seed,
)
