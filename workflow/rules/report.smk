# Report: paired comparisons against the best model, the tidy table, the figures.


rule compare_models:
    input:
        predictions=unit_predictions,
        rows=unit_rows,
    output:
        rows=paths.COMPARE,
    params:
        models=list(STUDY.models),
        seed=config["seed"],
        n_bootstrap=1000,
    log:
        "logs/compare_models/{protocol}/{dataset}/{variant}.log",
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
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/table.py"


rule figure:
    input:
        table=rules.table.output.table,
    output:
        figure="reports/figures/{protocol}.png",
    log:
        "logs/figure/{protocol}.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/figure.py"
