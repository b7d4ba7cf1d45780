"""Summary tables (Markdown, LaTeX, HTML) of the headline metric and AUROC, beside the published numbers."""

from medtransfer.reporting.summary import write_summary
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
write_summary(
    table=snakemake.input.table, markdown=snakemake.output.markdown, latex=snakemake.output.latex,
    html=snakemake.output.html, cells_csv=snakemake.output.cells, headline=snakemake.params.headline,
    study=snakemake.params.study, left_out=snakemake.params.left_out,
)
