"""Concatenate every result row of the study into reports/table.csv."""

from medtransfer.reporting.table import write_table
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
write_table(rows=snakemake.input.rows, out=snakemake.output.table)
