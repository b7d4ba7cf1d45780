# Report: paired comparisons against the best model, the tidy table, the figures.


rule compare_models:
    input:
        unpack(compare_inputs),
    output:
        rows=stages.compare_path(),
    params:
        metric=comparison_metric,
        n_bootstrap=comparison_n_bootstrap,
        seed=CONFIG["seed"],
    log:
        "logs/compare_models/{protocol}/{dataset}/{setting}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/compare_models.py"


rule table:
    input:
        rows=table_inputs,
    output:
        table="reports/table.csv",
    log:
        "logs/table.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/table.py"


rule figure:
    input:
        table=rules.table.output.table,
    output:
        figure="reports/figures/{protocol}.png",
    params:
        metric=figure_metric,
    log:
        "logs/figure/{protocol}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/figure.py"
