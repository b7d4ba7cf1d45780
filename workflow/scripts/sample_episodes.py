"""Draw the few-shot episodes of one (dataset, setting) once, for every model."""

from medtransfer.protocols.episodes import sample_episodes
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
settings = snakemake.params.settings
sample_episodes(
    index=snakemake.input.index, out=snakemake.output.episodes, n_way=snakemake.params.n_way,
    n_support=snakemake.params.n_support, n_query=settings["n_query"],
    episodes=settings["episodes"], pool=snakemake.params.pool,
    drop_short_classes=settings["drop_short_classes"], seed=snakemake.params.seed,
    dataset=snakemake.wildcards.dataset,
)
