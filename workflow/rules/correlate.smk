# Correlate: across models, per dataset and protocol, Spearman and Pearson correlations
# between transfer scores and the explanatory measures (ImageNet top-1, LPIPS, attentive
# diffusion, invariances), as table rows (protocol correlation) and scatter figures.


rule correlate:
    input:
        rows=correlation_inputs,
    output:
        rows=paths.CORRELATION,
    params:
        top1=STUDY.top1(),
        headline=STUDY.headline_metrics(),
        settings=correlation_settings(),
        seed=CONFIG["seed"],
    log:
        paths.log("correlate"),
    benchmark:
        paths.benchmark("correlate")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/correlate.py"


rule correlation_figures:
    input:
        table=rules.table.output.table,
    output:
        figures=report(
            correlation_figure_paths(),
            caption="../report/correlation.rst",
            category="correlation",
        ),
    params:
        measures=STUDY.correlation_measures(),
        top1=STUDY.top1(),
        headline=STUDY.headline_metrics(),
    log:
        paths.log("correlation_figures"),
    benchmark:
        paths.benchmark("correlation_figures")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/correlation_figures.py"
