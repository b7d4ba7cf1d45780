"""Sum the study's benchmark files into reports/cost.csv and its chart."""

from medtransfer.reporting.cost import write_cost
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
write_cost(
    benchmarks=snakemake.params.benchmarks, out=snakemake.output.cost, figure=snakemake.output.figure,
    stages=snakemake.params.stages, models=snakemake.params.models, datasets=snakemake.params.datasets,
    study=snakemake.params.study,
)
