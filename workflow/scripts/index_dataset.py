"""Turn a dataset download (or users' CSV / ImageFolder data) into the index with its split."""

from medtransfer.data.adapters import index_dataset
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
spec = snakemake.params.spec
index_dataset(
    snakemake.output.index, kind=spec["kind"], root=snakemake.params.root or None,
    csv=snakemake.params.csv or None, split=spec.get("split", "published"),
    seed=snakemake.params.seed, options=spec.get("options"),
)
