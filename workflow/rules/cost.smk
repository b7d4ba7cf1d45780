# Cost: where the study's time went. Sums every job's benchmark file (wall time, CPU time, peak
# memory) per stage and per model into reports/cost.csv and a chart (src/medtransfer/reporting/cost.py).
# It runs last: its inputs are the study's final outputs, so every other job has finished.


rule cost:
    input:
        table=rules.table.output.table,
        summary=rules.summary.output.markdown,
        figures=study_figures(),
    output:
        cost=report(paths.COST, caption="../report/cost.rst", category="cost"),
        figure=report(paths.COST_FIGURE, caption="../report/cost.rst", category="cost"),
    params:
        benchmarks=paths.BENCHMARKS,
        stages=lambda wildcards: rule_stages(),
        models=list(STUDY.models),
        datasets=list(STUDY.datasets),
        study=CONFIG["study"],
    log:
        paths.log("cost"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/cost.py"
