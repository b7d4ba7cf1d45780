# medtransfer: how well do self-supervised ImageNet models transfer to medical imaging?
#
# The table of contents of the workflow. Each stage lives in workflow/rules/<stage>.smk,
# runs one thin script from workflow/scripts/, and calls the logic in src/medtransfer/.
#
#   weights  -> download (or generate demo files), convert to torchvision layout
#   data     -> demo datasets, dataset index with the split, decoded image cache
#   features -> pooled features per (model, dataset), computed once
#   protocols -> one rule file per protocol registered in src/medtransfer/protocols/__init__.py
#               (linear, fewshot, finetune, knn; reconstruct, saliency, invariance):
#               evaluation rows with provenance
#   report   -> paired comparisons, reports/table.csv, reports/summary.{md,tex,html},
#               reports/figures/ (heatmaps, bar charts, radar charts); snakemake --report
#   correlate -> what goes with transfer across models (rows in the table, scatter figures)
#   cost     -> where the time went: benchmark files summed per stage and model, reports/cost.csv
#
# Usage: snakemake --cores 8 all            (the embedded demo study, config/config.yaml)
#        snakemake --cores 8 all --configfile config/paper.yaml   (the published study)
from snakemake.utils import min_version

min_version("9.0")


# The demo study is the default; a study given with --configfile replaces it whole
# (Snakemake would otherwise merge the two, mixing demo models into the study).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"


# Evaluation protocols: the rule file of each protocol registered in src/medtransfer/protocols/__init__.py
# (linear, fewshot, finetune, knn, reconstruct, saliency, invariance).
for _protocol in registry.PROTOCOLS.values():

    include: _protocol.rule_file


include: "workflow/rules/report.smk"
include: "workflow/rules/correlate.smk"
include: "workflow/rules/cost.smk"


rule all:
    default_target: True
    input:
        rules.table.output.table,
        summary=rules.summary.output.markdown,
        figures=study_figures(),
        cost=rules.cost.output.cost,
